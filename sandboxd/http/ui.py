"""The Studio: the web UI served at `/ui`, from static files shipped in the package
(`sandboxd/ui`: no CDN, nothing fetched at run time, works air-gapped).

Every path under `/ui/` that is not an asset answers the same page (the UI routes itself:
`/ui/runs/{id}` is a link to share), with a `<base>` that points at the UI's root relative to
the path asked, so that the UI works under any prefix a reverse proxy adds. The page calls the
`/v1` API with the token the user pasted: these routes need none, and hold nothing secret.

What the UI shows comes from runs and models (attacker-controlled): it renders text only,
and the headers here forbid what an injection would need: scripts other than the UI's own
files, inline scripts and styles, eval, frames, plugins, other origins.
"""

from __future__ import annotations

from importlib import resources
from pathlib import PurePosixPath

from aiohttp import web

from sandboxd.errors import NotFound

PREFIX = "/ui"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".html": "text/html",
}
BASE_MARK = b"__BASE_HREF__"


def is_ui(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def load_assets() -> dict[str, bytes]:
    """Every file of `sandboxd/ui/assets`, by its path under it (read once, at start)."""
    root = resources.files("sandboxd") / "ui"
    found: dict[str, bytes] = {"index.html": (root / "index.html").read_bytes()}
    pending = [("assets", root / "assets")]
    while pending:
        prefix, folder = pending.pop()
        for entry in folder.iterdir():
            name = f"{prefix}/{entry.name}"
            if entry.is_dir():
                pending.append((name, entry))
            elif PurePosixPath(entry.name).suffix in TYPES:
                found[name] = entry.read_bytes()
    return found


def base_href(tail: str) -> str:
    """The UI root relative to `/ui/{tail}`: `./` at the root, `../` one folder down, ..."""
    return "./" + "../" * tail.count("/")


def make_routes(assets: dict[str, bytes]) -> web.RouteTableDef:
    routes = web.RouteTableDef()
    page = assets["index.html"]

    @routes.get(PREFIX, name="ui.root")
    async def root(request: web.Request) -> web.Response:
        # relative: behind a proxy under /prefix, /prefix/ui goes to /prefix/ui/
        return web.Response(status=308, headers={**HEADERS, "Location": "ui/"})

    @routes.get(PREFIX + "/{tail:.*}", name="ui.page")
    async def serve(request: web.Request) -> web.Response:
        tail = request.match_info["tail"]
        if tail.startswith("assets/"):
            body = assets.get(tail)
            if body is None:
                raise NotFound("no such file of the UI")
            kind = TYPES[PurePosixPath(tail).suffix]
            headers = {**HEADERS, "Content-Type": kind, "Cache-Control": "no-cache"}
            return web.Response(body=body, headers=headers)
        html = page.replace(BASE_MARK, base_href(tail).encode())
        headers = {
            **HEADERS,
            "Content-Type": "text/html; charset=utf-8",
            "Cache-Control": "no-store",
        }
        return web.Response(body=html, headers=headers)

    return routes
