"""Host-side listeners that count connections: a jail must never reach them."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def counting(*servers: socket.socket) -> Iterator[list[str]]:
    """Accept on every listening socket until the block ends; yields the list of hits."""
    hits: list[str] = []
    stop = threading.Event()

    def accept(sock: socket.socket) -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                sock.accept()[0].close()
                hits.append(repr(sock.getsockname()))
            except TimeoutError:
                continue

    threads = [threading.Thread(target=accept, args=(s,), daemon=True) for s in servers]
    for t in threads:
        t.start()
    try:
        yield hits
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)
        for s in servers:
            s.close()
