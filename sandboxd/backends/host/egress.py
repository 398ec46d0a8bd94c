"""The egress proxy of one run: HTTP forward proxy and CONNECT, on a unix socket that only that
run's jail can reach (through the forwarder in `jail_forwarder.py`).

Every CONNECT and every plain-HTTP request is checked against the run's allowlist; the proxy
resolves names itself (the jail has no DNS), connects to the address it checked (no second
lookup, so no DNS rebinding), takes one request per plain-HTTP connection (so a redirect or a
second request comes back through the check), and answers a refusal with 403 and a body that
names the host and the reason. The daemon's own API is refused whatever the rules say.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from sandboxd.models import Connection, NetworkReport, RunRequest
from sandboxd.netrules import Allowlist, Decision, IPAddress, parse_rule
from sandboxd.settings import Settings

log = logging.getLogger("sandboxd.backends.host.egress")
HEAD_LIMIT = 64 * 1024
CONNECT_TIMEOUT_S = 10.0
HEAD_TIMEOUT_S = 30.0
MAX_LOGGED = 200
Resolver = Callable[[str], "asyncio.Future[list[IPAddress]]"]


async def system_resolve(host: str, hosts: dict[str, list[str]]) -> list[IPAddress]:
    """Names from the settings' hosts table first, else the system resolver."""
    if host in hosts:
        return [ipaddress.ip_address(a) for a in hosts[host]]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return []
    return list(dict.fromkeys(ipaddress.ip_address(i[4][0]) for i in infos))


@dataclass
class EgressProxy:
    allowlist: Allowlist
    hosts: dict[str, list[str]]
    forbidden: Callable[[IPAddress, int], bool]
    report: NetworkReport = field(default_factory=NetworkReport)
    _server: asyncio.AbstractServer | None = None

    async def start(self, path: Path) -> None:
        self._server = await asyncio.start_unix_server(self._handle, path=str(path))
        # The jail's unmapped uid connects; only the run's own (root-owned) directory holds it.
        await asyncio.to_thread(path.chmod, 0o666)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def _note(self, allowed: bool, host: str, port: int, reason: str) -> Connection:
        conn = Connection(host=host, port=port, reason=reason)
        bucket = self.report.allowed if allowed else self.report.denied
        if len(bucket) < MAX_LOGGED:
            bucket.append(conn)
        return conn

    async def decide(self, host: str, port: int) -> Decision:
        host = host.strip("[]").lower().rstrip(".")
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            decision = self.allowlist.literal(literal, port)
        elif not self.allowlist.name_allowed(host, port):
            return Decision(False, f"{host}:{port} is not in this run's allowlist")
        else:
            decision = self.allowlist.resolved(host, port, await system_resolve(host, self.hosts))
        address = decision.address
        if address is not None and self.forbidden(ipaddress.ip_address(address), port):
            return Decision(False, "the sandboxd API is never reachable from a sandbox")
        return decision

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            writer.close()
            return
        try:
            await self._serve(head, reader, writer)
        except (ConnectionError, OSError, TimeoutError):
            pass
        finally:
            writer.close()

    async def _serve(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            await _answer(writer, 400, "malformed request line")
            return
        method, target, version = parts
        if method == "CONNECT":
            host, _, port_text = target.rpartition(":")
            path_line = None
        else:
            url = urlsplit(target)
            if url.scheme != "http" or not url.hostname:
                await _answer(writer, 400, "send absolute http:// URLs, or CONNECT for https")
                return
            host, port_text = url.hostname, str(url.port or 80)
            path_line = (
                f"{method} {url.path or '/'}{'?' + url.query if url.query else ''} {version}"
            )
        if not port_text.isdigit():
            await _answer(writer, 400, f"no port in {target!r}")
            return
        port = int(port_text)
        decision = await self.decide(host, port)
        if not decision.allowed or decision.address is None:
            self._note(False, host, port, decision.reason)
            await _answer(
                writer, 403, f"sandboxd egress proxy refused {host}:{port}: {decision.reason}"
            )
            return
        try:
            up_r, up_w = await asyncio.wait_for(
                asyncio.open_connection(decision.address, port), CONNECT_TIMEOUT_S
            )
        except (OSError, TimeoutError) as exc:
            self._note(False, host, port, f"connect to {decision.address} failed: {exc}")
            await _answer(writer, 502, f"cannot connect to {host}:{port}: {exc}")
            return
        conn = self._note(True, host, port, decision.reason)
        try:
            if path_line is None:
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
                up, down = await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer))
            else:
                # The Host header is the checked name: no virtual-host fronting behind it.
                dropped = ("proxy-", "connection:", "keep-alive:", "host:")
                kept = [f"Host: {host}:{port}"] + [
                    ln for ln in lines[1:] if ln and not ln.lower().startswith(dropped)
                ]
                body_len = next(
                    (
                        int(ln.split(":", 1)[1])
                        for ln in kept
                        if ln.lower().startswith("content-length:")
                    ),
                    0,
                )
                out = "\r\n".join([path_line, *kept, "Connection: close", "", ""]).encode()
                up_w.write(out)
                if body_len:
                    up_w.write(await reader.readexactly(body_len))
                await up_w.drain()
                up, down = len(out) + body_len, await _pipe(up_r, writer)
            conn.bytes_up, conn.bytes_down = up, down
        finally:
            up_w.close()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> int:
    total = 0
    try:
        while chunk := await src.read(65536):
            dst.write(chunk)
            await dst.drain()
            total += len(chunk)
    except (ConnectionError, OSError):
        pass
    with contextlib.suppress(OSError, RuntimeError):
        if dst.can_write_eof():
            dst.write_eof()
    return total


async def _answer(writer: asyncio.StreamWriter, status: int, message: str) -> None:
    reason = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway"}[status]
    body = (message + "\n").encode()
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    with contextlib.suppress(ConnectionError, OSError):
        await writer.drain()


class EgressGuard:
    """Starts a run's proxy when its network is an allowlist; knows the daemon's own API."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.local_addresses = {
            a.address.split("%")[0]
            for addrs in psutil.net_if_addrs().values()
            for a in addrs
            if a.family in (socket.AF_INET, socket.AF_INET6)
        }

    def forbidden(self, ip: IPAddress, port: int) -> bool:
        """Is (ip, port) this daemon's own API? Never reachable from a sandbox."""
        if port != self.settings.port:
            return False
        return ip.is_loopback or ip.is_unspecified or str(ip) in self.local_addresses

    async def start(self, request: RunRequest, socket_path: Path) -> EgressProxy | None:
        """The run's proxy, listening before the sandbox exists (allowlist runs only)."""
        if request.network.mode != "allowlist":
            return None
        rules = [parse_rule(r) for r in request.network.allow]
        trusted = frozenset(self.settings.egress.trusted_private_names)
        proxy = EgressProxy(Allowlist(rules, trusted), self.settings.egress.hosts, self.forbidden)
        await proxy.start(socket_path)
        return proxy
