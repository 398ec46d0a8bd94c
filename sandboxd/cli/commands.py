"""The `sandboxd` command: `serve` the daemon, `run` a file through it, manage `token`s, verify
the `audit` trail and build `images`.

Exit codes of `sandboxd run`: the program's own exit code for `ok` and `failed`; 128+N when a
signal N killed it; 121 output_limit, 122 memory_limit, 123 cpu_limit, 124 timeout; 125 when
sandboxd itself could not run it (a mistake in the command line, daemon unreachable, request
refused, sandbox error).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import ValidationError

from sandboxd.cli import admin as cli_admin
from sandboxd.client import (
    Client,
    OneLineArgumentParser,
    SyncClient,
    default_url,
    quiet_broken_pipe,
)
from sandboxd.errors import DaemonUnreachable, SandboxdError, error_from_wire
from sandboxd.models import FileIn, Language, Limits, RunRequest, RunResult
from sandboxd.observability import configure_logging
from sandboxd.service.policy import validation_error

EXIT_BY_STATUS = {"output_limit": 121, "memory_limit": 122, "cpu_limit": 123, "timeout": 124}
EXIT_SANDBOXD = 125
LANG_BY_SUFFIX: dict[str, Language] = {".py": "python", ".sh": "bash", ".js": "node"}


def exit_code_for(result: RunResult) -> int:
    if result.status in EXIT_BY_STATUS:
        return EXIT_BY_STATUS[result.status]
    if result.status == "error":
        return EXIT_SANDBOXD
    if result.signal:
        try:
            return 128 + int(signal.Signals[result.signal])
        except KeyError:
            return EXIT_SANDBOXD
    return result.exit_code if result.exit_code is not None else EXIT_SANDBOXD


_fail = cli_admin.fail


def status_note(result: RunResult) -> str:
    """The line `sandboxd run` prints for a run that neither succeeded nor failed on its own:
    the status, the signal that ended it and the daemon's message, whichever are known."""
    parts = [f"sandboxd: {result.status}"]
    if result.signal:
        try:
            number = f", exit {128 + int(signal.Signals[result.signal])}"
        except KeyError:
            number = ""
        parts.append(f": the program was killed by {result.signal}{number}")
    elif result.exit_code is not None and result.status not in ("ok", "failed"):
        parts.append(f": exit code {result.exit_code}")
    if result.message:
        parts.append(f" ({result.message})")
    if len(parts) == 1:
        parts.append(": no reason given by the daemon")
    return "".join(parts)


def _parse_env(items: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--env {item}: give KEY=VALUE (e.g. --env {key or 'NAME'}=value)")
        env[key] = value
    return env


def _check_url(url: str | None) -> str:
    """The daemon's URL, refused in one line when it is not an http(s) URL."""
    where = f"--url {url}" if url else f"SANDBOXD_URL={default_url()}"
    url = url or default_url()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{where} is not a URL: give one like http://127.0.0.1:8765")
    return url


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from sandboxd.http.app import claim_state, make_app
    from sandboxd.settings import load_settings

    overrides: dict[str, object] = {}
    if args.host is not None:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    if args.state_dir is not None:
        overrides["state_dir"] = args.state_dir
    try:
        settings = load_settings(args.config, **overrides)
    except ValidationError as exc:
        return _fail(f"bad settings: {validation_error(exc).message}")
    except (FileNotFoundError, ValueError) as exc:
        return _fail(f"bad settings: {str(exc).splitlines()[0]}")
    configure_logging(settings.log_level)
    # Order matters on a shared host: the state dir's lock before anything is touched, the
    # port before anything is reaped, so a daemon that cannot serve disturbs nobody.
    try:
        claim = claim_state(settings)
    except SandboxdError as exc:
        return _fail(exc.message)
    except OSError as exc:
        return _fail(f"cannot use state dir {settings.state_dir}: {exc}")
    try:
        sock = bind_socket(settings.host, settings.port)
    except OSError as exc:
        claim.release()
        return _fail(
            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}; "
            "choose another --port or stop what uses it"
        )
    host, port = sock.getsockname()[:2]
    try:
        app = make_app(settings, claim)
        web.run_app(
            app,
            sock=sock,
            print=lambda _msg: print(
                f"sandboxd listening on http://{host}:{port}\n"
                f"Studio (web UI): http://{host}:{port}/ui/ (sign in with a token)",
                flush=True,
            ),
            access_log=None,
            shutdown_timeout=settings.shutdown_grace_s,
        )
    except SandboxdError as exc:
        return _fail(exc.message)
    finally:
        claim.release()
    return 0


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (the first address it resolves to), not yet serving."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(False)
    return sock


def cmd_images(args: argparse.Namespace) -> int:
    from sandboxd.backends.docker import images

    try:
        if args.images_command == "build":
            lines = images.build(args.name or None, args.mirror)
        elif args.images_command == "export":
            defs = images.definitions()
            by_tag = {d.tag: n for n, d in defs.items()}
            args.name = by_tag.get(args.name, args.name)
            if args.name not in defs:
                have = ", ".join(sorted(defs))
                return _fail(f"no image {args.name!r}: have {have} (see `sandboxd images list`)")
            if images.current_label(defs[args.name].tag) is None:
                return _fail(
                    f"image {args.name} is not built yet: run `sandboxd images build {args.name}`"
                )
            lines = [images.export(args.name, args.dest)]
        else:
            lines = images.listing()
    except (ValueError, RuntimeError, OSError) as exc:
        return _fail(str(exc).splitlines()[0] if str(exc) else repr(exc))
    print("\n".join(lines))
    return 0


def _build_request(args: argparse.Namespace) -> RunRequest:
    path = Path(args.file)
    code = sys.stdin.read() if args.file == "-" else path.read_text()
    language = args.language or LANG_BY_SUFFIX.get(path.suffix, "python")
    limits = Limits()
    if args.timeout is not None:
        limits.wall_time_s = limits.cpu_time_s = args.timeout
    if args.memory is not None:
        limits.memory_mib = args.memory
    env = _parse_env(args.env)
    files = [FileIn(path=Path(f).name, content=Path(f).read_text()) for f in args.add_file]
    stdin = sys.stdin.read() if args.file != "-" and not sys.stdin.isatty() else None
    return RunRequest(
        language=language, code=code, limits=limits, env=env, files=files, stdin=stdin
    )


def cmd_run(args: argparse.Namespace) -> int:
    try:
        args.url = _check_url(args.url)
        request = _build_request(args)
    except OSError as exc:
        return _fail(f"cannot read {exc.filename}: {exc.strerror}")
    except ValidationError as exc:
        return _fail(validation_error(exc).message)
    except ValueError as exc:
        return _fail(str(exc))
    try:
        if args.json:
            with SyncClient(args.url, token=args.token) as client:
                result = client.run(request)
            print(result.model_dump_json(indent=2))
        else:
            result = asyncio.run(_run_live(args, request))
            if result.status not in ("ok", "failed"):
                print(status_note(result), file=sys.stderr)
    except SandboxdError as exc:
        where = f" ({exc.field})" if exc.field else ""
        return _fail(f"{exc.message}{where}")
    except KeyboardInterrupt:
        return _fail("interrupted; the run was cancelled")
    return exit_code_for(result)


async def _run_live(args: argparse.Namespace, request: RunRequest) -> RunResult:
    """Stream the run: its output is printed as it comes."""
    async with Client(args.url, token=args.token) as client:
        async for event in client.stream_run(request):
            if event.event in ("stdout", "stderr"):
                out = sys.stdout if event.event == "stdout" else sys.stderr
                out.write(event.data or "")
                out.flush()
            elif event.event == "exit" and event.result is not None:
                return event.result
            elif event.event == "error":
                raise error_from_wire(500, {"error": event.error})
    raise DaemonUnreachable("the daemon closed the stream before the run's result")


def cmd_mcp(args: argparse.Namespace) -> int:
    """MCP over stdio for desktop clients, every tool call forwarded to a daemon."""
    from sandboxd.integrations.mcp import serve_stdio

    try:
        url = _check_url(args.url)
    except ValueError as exc:
        return _fail(str(exc))

    async def check_then_serve() -> None:
        async with Client(url, token=args.token) as client:
            await client.info()  # refuse at once, in one line, rather than on the first call
        await serve_stdio(url, args.token)

    try:
        asyncio.run(check_then_serve())
    except SandboxdError as exc:
        return _fail(exc.message)
    except KeyboardInterrupt:
        return 130
    return 0


class _Parser(OneLineArgumentParser):
    # `sandboxd run` exits with the program's own status, so a mistake in its command line
    # must not look like one: 125, as for everything sandboxd itself could not do
    usage_status = EXIT_SANDBOXD


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sandboxd", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the daemon")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8765)")
    serve.add_argument("--config", type=Path, help="TOML settings file")
    serve.add_argument("--state-dir", type=Path, help="state directory (default /var/lib/sandboxd)")
    serve.set_defaults(func=cmd_serve)

    run = sub.add_parser("run", help="run a file in a sandbox and print its output")
    run.add_argument("file", help="source file, or - to read it from stdin")
    run.add_argument(
        "--language",
        choices=["python", "bash", "node"],
        help="language of the file (default: from its suffix, .py .sh .js; else python)",
    )
    run.add_argument("--timeout", type=float, help="wall and cpu time limit in seconds")
    run.add_argument("--memory", type=int, help="memory limit in MiB")
    run.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a variable in the sandbox (repeatable)",
    )
    run.add_argument(
        "--add-file",
        action="append",
        default=[],
        metavar="PATH",
        help="also copy this file into the workspace (repeatable)",
    )
    run.add_argument("--json", action="store_true", help="print the whole result as JSON")
    run.add_argument("--url", help="daemon URL (default $SANDBOXD_URL or http://127.0.0.1:8765)")
    run.add_argument(
        "--token",
        help="bearer token (default $SANDBOXD_TOKEN, else the local "
        "daemon's admin token when this user may read it)",
    )
    run.set_defaults(func=cmd_run)
    mcp = sub.add_parser("mcp", help="serve MCP over stdio (for desktop MCP clients)")
    mcp.add_argument("--url", help="daemon URL (default $SANDBOXD_URL or http://127.0.0.1:8765)")
    mcp.add_argument(
        "--token",
        help="bearer token (default $SANDBOXD_TOKEN, else the local "
        "daemon's admin token when this user may read it)",
    )
    mcp.set_defaults(func=cmd_mcp)
    cli_admin.add_parsers(sub)
    images = sub.add_parser("images", help="build and list sandbox images (Docker backend)")
    images_sub = images.add_subparsers(dest="images_command", required=True, metavar="ACTION")
    build = images_sub.add_parser("build", help="build images from nothing (debootstrap)")
    build.add_argument("name", nargs="*", help="image names (default: all)")
    build.add_argument(
        "--mirror",
        metavar="URL",
        help="Debian mirror to debootstrap the base from (default $SANDBOXD_DEBIAN_MIRROR, "
        "else the host apt's first bookworm main source)",
    )
    images_sub.add_parser("list", help="show the images and whether they are up to date")
    export = images_sub.add_parser("export", help="unpack an image as a root for nsjail")
    export.add_argument("name", help="image name: base, python or node (or its tag)")
    export.add_argument("dest", type=Path, help="empty or missing directory to unpack into")
    images.set_defaults(func=cmd_images)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        sys.stdout.flush()  # here, where a reader that has gone is caught, not at exit
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return quiet_broken_pipe()
    return code
