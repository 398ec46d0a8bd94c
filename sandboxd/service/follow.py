"""Following a run in flight from another request (the Studio's run page): what it printed
so far, then each chunk as it comes, then its result.

Every run's output passes through its `RunControl.on_output` on the event loop; the run
manager tees it into an `OutputLog` kept with the run while it is in flight. What is kept is
what the run's result keeps (the captures report only the stored part, within
`output_bytes`), so following costs no more memory than the run's result will hold. A
follower gets a copy of what came before and a queue of what comes next; the log ends (None
in every queue) when the run does.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sandboxd.backends.base import RunControl

Chunk = tuple[str, bytes]


@dataclass
class OutputLog:
    chunks: list[Chunk] = field(default_factory=list)
    followers: set[asyncio.Queue[Chunk | None]] = field(default_factory=set)
    closed: bool = False

    def add(self, stream: str, chunk: bytes) -> None:
        self.chunks.append((stream, chunk))
        for queue in self.followers:
            queue.put_nowait((stream, chunk))

    def close(self) -> None:
        self.closed = True
        for queue in self.followers:
            queue.put_nowait(None)

    def follow(self) -> tuple[list[Chunk], asyncio.Queue[Chunk | None]]:
        """What came so far, and a queue of what comes next (None: the run is over)."""
        queue: asyncio.Queue[Chunk | None] = asyncio.Queue()
        if self.closed:
            queue.put_nowait(None)
        else:
            self.followers.add(queue)
        return list(self.chunks), queue

    def leave(self, queue: asyncio.Queue[Chunk | None]) -> None:
        self.followers.discard(queue)


def tee(control: RunControl, log: OutputLog) -> None:
    """Make `control` report its run's output to `log` too (before the backend reads it)."""
    original = control.on_output

    def both(stream: str, chunk: bytes) -> None:
        log.add(stream, chunk)
        if original is not None:
            original(stream, chunk)

    control.on_output = both
