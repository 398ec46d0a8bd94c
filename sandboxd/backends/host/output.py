"""Bounded capture of a run's output streams."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

CHUNK = 65536


class StreamCapture:
    """Keeps the first `limit` bytes of a stream; says when more than that arrived."""

    def __init__(self, limit: int, on_data: Callable[[bytes], None] | None = None) -> None:
        self.limit = limit
        self.buf = bytearray()
        self.truncated = False
        self.on_data = on_data

    def feed(self, chunk: bytes) -> bool:
        """Store what fits (and pass it to `on_data`); True once the stream went over."""
        room = self.limit - len(self.buf)
        if len(chunk) > room:
            chunk = chunk[: max(room, 0)]
            self.truncated = True
        self.buf += chunk
        if chunk and self.on_data is not None:
            self.on_data(chunk)
        return self.truncated

    def text(self) -> str:
        return self.buf.decode("utf-8", errors="replace")


async def pump(
    reader: asyncio.StreamReader, capture: StreamCapture, on_overflow: Callable[[], None]
) -> None:
    """Read `reader` to EOF into `capture`; call `on_overflow` once when it goes over."""
    told = False
    while chunk := await reader.read(CHUNK):
        if capture.feed(chunk) and not told:
            told = True
            on_overflow()


Sink = Callable[[bytes | None, bytes | None], None]


def output_sink(out: StreamCapture, err: StreamCapture, overflow: asyncio.Event) -> Sink:
    """Feed the captures from the reader thread; set `overflow` (on the loop) once over."""
    loop = asyncio.get_running_loop()

    def sink(chunk_out: bytes | None, chunk_err: bytes | None) -> None:
        for cap, chunk in ((out, chunk_out), (err, chunk_err)):
            if chunk and cap.feed(chunk):
                loop.call_soon_threadsafe(overflow.set)

    return sink
