"""How the Studio is served: its headers (CSP, nosniff, frames), deep links, downloads as
attachments, and the whole UI behind a reverse proxy under a path prefix."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

from aiohttp import ClientSession, web

from coder.testing.harness import LoopbackServer
from tests.daemon import Daemon
from tests.ui.conftest import Studio, with_client

HOP_BY_HOP = {"content-length", "transfer-encoding", "content-encoding", "connection"}


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, dict(err.headers), err.read()


def test_ui_headers_forbid_what_an_injection_needs(daemon: Daemon) -> None:
    status, headers, body = fetch(f"{daemon.url}/ui/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    csp = headers["Content-Security-Policy"]
    for directive in ("default-src 'self'", "script-src 'self'", "frame-ancestors 'none'"):
        assert directive in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert b'<base href="./">' in body and b"<script>" not in body  # no inline script
    status, headers, _ = fetch(f"{daemon.url}/ui/assets/app.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert "Content-Security-Policy" in headers
    status, headers, body = fetch(f"{daemon.url}/ui/assets/missing.js")
    assert status == 404 and headers["Content-Type"].startswith("application/json")
    status, headers, _ = fetch(f"{daemon.url}/ui")
    assert status == 308 and headers["Location"] == "ui/"  # relative: works under a prefix
    _, _, deep = fetch(f"{daemon.url}/ui/runs/run_0123456789abcdef")
    assert b'<base href="./../">' in deep
    assert f"Studio (web UI): http://127.0.0.1:{daemon.port}/ui/" in daemon.log.read_text()


def test_file_downloads_are_attachments(daemon: Daemon) -> None:
    sbx = with_client(daemon, lambda c: c.create_sandbox(limits={"disk_mib": 4}))
    try:
        with_client(daemon, lambda c: c.put_file(sbx.id, 'a"b<c>.html', b"<h1>x</h1>"))
        url = f"{daemon.url}/v1/sandboxes/{sbx.id}/files/a%22b%3Cc%3E.html"
        status, headers, body = fetch(url, daemon.auth)
        assert status == 200 and body == b"<h1>x</h1>"
        assert headers["Content-Type"] == "application/octet-stream"
        assert headers["Content-Disposition"] == "attachment; filename*=UTF-8''a%22b%3Cc%3E.html"
    finally:
        with_client(daemon, lambda c: c.delete_sandbox(sbx.id))


def proxy_app(upstream: str, prefix: str) -> web.Application:
    """A reverse proxy that serves `upstream` under `prefix` (streams answers, for SSE)."""

    async def forward(request: web.Request) -> web.StreamResponse:
        target = f"{upstream}/{request.match_info['tail']}"
        if request.query_string:
            target += f"?{request.query_string}"
        keep = ("authorization", "content-type", "accept")
        headers = {k: v for k, v in request.headers.items() if k.lower() in keep}
        async with (
            ClientSession() as session,
            session.request(
                request.method,
                target,
                headers=headers,
                data=await request.read(),
                allow_redirects=False,
            ) as answer,
        ):
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
            response = web.StreamResponse(status=answer.status, headers=kept)
            await response.prepare(request)
            async for chunk in answer.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    app = web.Application()
    app.router.add_route("*", prefix + "/{tail:.*}", forward)
    return app


def test_the_studio_works_behind_a_proxy_under_a_prefix(studio: Studio, daemon: Daemon) -> None:
    proxy = LoopbackServer(proxy_app(daemon.url, "/tools/sandboxd")).start()
    seen: list[str] = []
    try:
        base = f"http://127.0.0.1:{proxy.port}/tools/sandboxd"
        page = studio.page
        page.on("request", lambda r: seen.append(r.url))
        page.goto(f"{base}/ui")  # the relative redirect keeps the prefix
        page.fill("input[name=token]", daemon.token)
        page.click("button:has-text('Sign in')")
        page.wait_for_selector("nav")
        page.click("nav a:has-text('Playground')")
        page.fill("textarea[name=code]", "print('through the proxy')")
        page.click("button:has-text('Run')")
        page.wait_for_selector(".result pre.stream-stdout:has-text('through the proxy')")
        page.click(".live a")  # the run's deep link, under the prefix
        page.wait_for_selector("main h1:has-text('Run')")
        assert page.url.startswith(f"{base}/ui/runs/run_")
        studio.shot("proxied")
    finally:
        proxy.stop()
    outside = [u for u in seen if not u.startswith(base) and not u.startswith("data:")]
    assert outside == []
    assert any(u.startswith(f"{base}/v1/runs") for u in seen)
