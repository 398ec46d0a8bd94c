"""A test host's services, run inside a network namespace the tests create: HTTP on 8080
(hello, a redirect, a tiny package index, how often its wheel was served) and a TCP echo on
8443 (for CONNECT)."""

from __future__ import annotations

import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

BIND = sys.argv[1]
WHEEL_PATH = Path(sys.argv[2])
WHEEL = WHEEL_PATH.read_bytes()
SERVED = {"wheel": 0}  # how often the wheel went out (the download-cache test reads it)


IMMUTABLE = "max-age=31536000, immutable"


class Handler(BaseHTTPRequestHandler):
    def _send(self, status: int, body: bytes, ctype: str = "text/plain", **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/hello":
            self._send(200, f"hello from the test host (Host: {self.headers['Host']})".encode())
        elif self.path == "/redirect":
            self._send(302, b"", Location="http://unlisted.test:8080/hello")
        elif self.path.rstrip("/") == "/simple/tinypkg":
            link = f'<a href="/packages/{WHEEL_PATH.name}">{WHEEL_PATH.name}</a>'
            self._send(200, f"<html><body>{link}</body></html>".encode(), "text/html")
        elif self.path == f"/packages/{WHEEL_PATH.name}":
            SERVED["wheel"] += 1
            # as real indexes serve files: immutable, cacheable
            self._send(200, WHEEL, "application/octet-stream", **{"Cache-Control": IMMUTABLE})
        elif self.path == "/served":
            self._send(200, str(SERVED["wheel"]).encode())
        else:
            self._send(404, b"not here")

    def log_message(self, *args: object) -> None:
        pass


def echo() -> None:
    srv = socket.create_server((BIND, 8443))
    while True:
        conn, _ = srv.accept()
        threading.Thread(
            target=lambda c=conn: [c.sendall(d) for d in iter(lambda: c.recv(4096), b"")],
            daemon=True,
        ).start()


threading.Thread(target=echo, daemon=True).start()
ThreadingHTTPServer((BIND, 8080), Handler).serve_forever()
