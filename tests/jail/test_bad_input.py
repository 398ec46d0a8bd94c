"""Bad input gets a 4xx JSON error naming code, message and field; never a 500 or a traceback."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from sandboxd.client import SyncClient
from sandboxd.errors import InvalidRequest, LimitTooHigh
from tests.conftest import DOCKER_PROBLEM
from tests.daemon import Daemon


def http(daemon: Daemon, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
    req = daemon.request(path, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        raw = err.read()
        assert err.headers["Content-Type"].startswith("application/json"), raw[:200]  # noqa: PT017  # an HTTP reply's header, not the exception
        return err.code, json.loads(raw)


def post_run(daemon: Daemon, payload: Any) -> tuple[int, Any]:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return http(daemon, "POST", "/v1/runs", raw)


DEEP = b'{"code": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
CASES: list[tuple[str, Any, int, str, str | None]] = [
    ("malformed json", b'{"code": ', 400, "invalid_json", None),
    ("not utf-8", b'{"code": "\xff"}', 400, "invalid_json", None),
    ("json array", b"[1, 2]", 400, "invalid_json", None),
    ("unknown field", {"code": "", "langauge": "python"}, 400, "unknown_field", "langauge"),
    ("unknown limit", {"limits": {"memory_mb": 1}}, 400, "unknown_field", "limits.memory_mb"),
    ("wrong type", {"code": 42}, 400, "invalid_request", "code"),
    ("bad language", {"language": "cobol"}, 400, "invalid_request", "language"),
    ("limit too low", {"limits": {"memory_mib": 1}}, 400, "invalid_request", "limits.memory_mib"),
    (
        "negative time",
        {"limits": {"wall_time_s": -1}},
        400,
        "invalid_request",
        "limits.wall_time_s",
    ),
    (
        "limit above max",
        {"limits": {"memory_mib": 1_000_000}},
        400,
        "limit_too_high",
        "limits.memory_mib",
    ),
    (
        "wall above max",
        {"limits": {"wall_time_s": 100_000}},
        400,
        "limit_too_high",
        "limits.wall_time_s",
    ),
    (
        "absolute path",
        {"files": [{"path": "/etc/passwd"}]},
        400,
        "invalid_request",
        "files[0].path",
    ),
    ("dotdot path", {"files": [{"path": "a/../../x"}]}, 400, "invalid_request", "files[0].path"),
    ("empty path", {"files": [{"path": ""}]}, 400, "invalid_request", "files[0].path"),
    ("dot path", {"files": [{"path": "./"}]}, 400, "invalid_request", "files[0].path"),
    ("nul in path", {"files": [{"path": "a\u0000b"}]}, 400, "invalid_request", "files[0].path"),
    (
        "bad base64",
        {"files": [{"path": "x", "content": "!!!", "encoding": "base64"}]},
        400,
        "invalid_request",
        "files[0]",
    ),
    (
        "bad encoding",
        {"files": [{"path": "x", "encoding": "latin-1"}]},
        400,
        "invalid_request",
        "files[0].encoding",
    ),
    ("duplicate path", {"files": [{"path": "a"}, {"path": "./a"}]}, 400, "invalid_request", None),
    ("main clash", {"code": "x", "files": [{"path": "main.py"}]}, 400, "invalid_request", None),
    ("bad env name", {"env": {"1X": "y"}}, 400, "invalid_request", "env"),
    ("nul in env", {"env": {"X": "a\u0000"}}, 400, "invalid_request", "env"),
    ("empty command", {"command": []}, 400, "invalid_request", "command"),
    ("nul in argv", {"command": ["ls", "\u0000"]}, 400, "invalid_request", "command"),
    ("collect escape", {"collect": ["../*"]}, 400, "invalid_request", "collect"),
    ("unknown backend", {"backend": "vm"}, 400, "invalid_request", "backend"),
    ("image on nsjail", {"image": "python:3.12"}, 400, "invalid_request", "image"),
    ("empty body", b"", 400, "invalid_json", None),
    ("blank body", b" \n", 400, "invalid_json", None),
    ("deep nesting", b"[" * 100_000, 400, "invalid_json", None),
    ("deep closed nesting", DEEP, 400, "invalid_json", None),
    ("surrogate in code", b'{"code": "\\ud800"}', 400, "invalid_request", "code"),
    ("surrogate in stdin", b'{"stdin": "x\\udfff"}', 400, "invalid_request", "stdin"),
    (
        "surrogate in file",
        b'{"files": [{"path": "a", "content": "\\ud800"}]}',
        400,
        "invalid_request",
        "files[0].content",
    ),
    ("surrogate in path", b'{"files": [{"path": "\\ud800"}]}', 400, "invalid_request", None),
    ("surrogate in env", b'{"env": {"X": "\\ud800"}}', 400, "invalid_request", "env.X"),
    ("surrogate in argv", b'{"command": ["\\udc00"]}', 400, "invalid_request", "command[0]"),
    ("surrogate in a key", b'{"\\ud800": 1}', 400, "invalid_request", None),
    (
        "code with command",
        {"code": "print(1)", "command": ["python3", "main.py"]},
        400,
        "invalid_request",
        "command",
    ),
]


@pytest.mark.parametrize(
    ("payload", "status", "code", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_run_request(
    daemon: Daemon, payload: Any, status: int, code: str, field: str | None
) -> None:
    got_status, body = post_run(daemon, payload)
    assert got_status == status, body
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "field"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert "Traceback" not in body["error"]["message"]
    if field is not None:
        assert body["error"]["field"] == field


def test_too_large_body_is_413(daemon: Daemon) -> None:
    big = {"code": "x" * (40 * 1024 * 1024)}
    status, body = post_run(daemon, big)
    assert status == 413
    assert body["error"]["code"] == "payload_too_large"


def test_files_larger_than_disk_are_413(daemon: Daemon) -> None:
    payload = {
        "files": [{"path": "big", "content": "x" * (3 * 1024 * 1024)}],
        "limits": {"disk_mib": 2},
    }
    status, body = post_run(daemon, payload)
    assert status == 413, body
    assert body["error"]["code"] == "payload_too_large"


def test_file_under_a_file_is_400(daemon: Daemon) -> None:
    payload = {"files": [{"path": "a", "content": "x"}, {"path": "a/b", "content": "y"}]}
    status, body = post_run(daemon, payload)
    assert status == 400, body


def test_unknown_route_is_json_404(daemon: Daemon) -> None:
    status, body = http(daemon, "GET", "/v1/nothing")
    assert status == 404
    assert body["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/v1/runs", "POST"),
        ("TRACE", "/healthz", "GET"),
        ("TRACE", "/v1/info", "GET"),
        ("POST", "/v1/sandboxes/sbx_x", "DELETE"),
    ],
)
def test_wrong_method_is_json_405_with_allow(
    daemon: Daemon, method: str, path: str, allow: str
) -> None:
    req = daemon.request(path, data=b"{}" if method in ("PUT", "POST") else None, method=method)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 405
    assert json.loads(err.value.read())["error"]["code"] == "method_not_allowed"
    assert allow in err.value.headers.get("Allow", "").split(","), dict(err.value.headers)


def test_an_empty_object_runs_the_defaults(daemon: Daemon) -> None:
    status, body = http(daemon, "POST", "/v1/runs", b"{}")
    assert status == 200
    assert body["status"] == "ok"


@pytest.mark.parametrize("path", ["/v1/sandboxes", "/v1/sandboxes/{box}/runs"])
def test_every_post_needs_a_body(client: SyncClient, daemon: Daemon, path: str) -> None:
    box = client.create_sandbox(limits={"disk_mib": 4}).id
    try:
        status, body = http(daemon, "POST", path.format(box=box), b"")
        assert status == 400, body
        assert body["error"]["code"] == "invalid_json"
        assert len(client.list_sandboxes()) == 1
    finally:
        client.delete_sandbox(box)


@pytest.mark.parametrize("where", ["run", "stream", "sandbox run", "sandbox stream"])
def test_a_lone_surrogate_is_400_everywhere(client: SyncClient, daemon: Daemon, where: str) -> None:
    box = client.create_sandbox(limits={"disk_mib": 4}).id
    try:
        path = f"/v1/sandboxes/{box}/runs" if where.startswith("sandbox") else "/v1/runs"
        req = daemon.request(path, data=b'{"code": "print(1)", "stdin": "\\ud800"}', method="POST")
        if where.endswith("stream"):
            req.add_header("Accept", "text/event-stream")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=30)
        assert err.value.code == 400
        assert err.value.headers["Content-Type"].startswith("application/json")
        assert json.loads(err.value.read())["error"]["field"] == "stdin"
    finally:
        client.delete_sandbox(box)


def test_client_maps_codes_back_to_classes(client: SyncClient) -> None:
    with pytest.raises(LimitTooHigh) as err:
        client.run(code="", limits={"pids": 10**6})
    assert err.value.field == "limits.pids"
    with pytest.raises(InvalidRequest) as err2:
        client.run(code="", files=[{"path": "../up"}])
    assert err2.value.field == "files[0].path"


def test_daemon_still_healthy_after_bad_input(client: SyncClient) -> None:
    assert client.health().status == "ok"
    assert client.run(code="print(1)").stdout == "1\n"


def test_docker_backend_refusals(daemon: Daemon) -> None:
    """Without docker the backend is refused; with it, an image the host lacks is."""
    status, body = post_run(daemon, {"backend": "docker", "image": "no/such:image"})
    assert status == 400, body
    assert body["error"]["field"] == ("backend" if DOCKER_PROBLEM else "image")
