"""Tokens, scopes and tenants: every call but /healthz needs a token; a tenant never sees or
touches another tenant's things (404, not 403); quotas per tenant."""

from __future__ import annotations

import json
import os
import re
import stat
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from sandboxd.errors import Forbidden, NotFound, QuotaExceeded, Unauthorized
from sandboxd.http import routes
from tests.daemon import Daemon

ENDPOINTS: list[tuple[str, str, bytes | None]] = [
    ("GET", "/v1/info", None),
    ("POST", "/v1/runs", b'{"code": "print(1)"}'),
    ("GET", "/v1/runs/run_0000000000000000", None),
    ("GET", "/v1/audit", None),
    ("POST", "/v1/sandboxes", b"{}"),
    ("GET", "/v1/sandboxes", None),
    ("GET", "/v1/sandboxes/sbx_x", None),
    ("DELETE", "/v1/sandboxes/sbx_x", None),
    ("POST", "/v1/sandboxes/sbx_x/runs", b"{}"),
    ("PUT", "/v1/sandboxes/sbx_x/files/a.txt", b"x"),
    ("GET", "/v1/sandboxes/sbx_x/files/a.txt", None),
    ("DELETE", "/v1/sandboxes/sbx_x/files/a.txt", None),
    ("GET", "/v1/sandboxes/sbx_x/archive", None),
    ("POST", "/v1/sandboxes/sbx_x/contexts", b"{}"),
    ("GET", "/v1/sandboxes/sbx_x/contexts", None),
    ("POST", "/v1/sandboxes/sbx_x/contexts/ctx_0000000000000000/execute", b'{"code": "1"}'),
    ("DELETE", "/v1/sandboxes/sbx_x/contexts/ctx_0000000000000000", None),
    ("GET", "/v1/sandboxes/sbx_x/contexts/ctx_0000000000000000", None),
    ("POST", "/v1/sandboxes/sbx_x/contexts/ctx_0000000000000000/interrupt", None),
    ("POST", "/v1/sandboxes/sbx_x/contexts/ctx_0000000000000000/restart", None),
    ("POST", "/v1/sandboxes/sbx_x/snapshots", b"{}"),
    ("GET", "/v1/snapshots", None),
    ("GET", "/v1/snapshots/snap_0000000000000000", None),
    ("DELETE", "/v1/snapshots/snap_0000000000000000", None),
    ("GET", "/v1/runs", None),
    ("DELETE", "/v1/runs/run_0000000000000000", None),
    ("GET", "/v1/runs/run_0000000000000000/events", None),
    ("POST", "/v1/solves", b"{}"),
    ("GET", "/v1/solves", None),
    ("GET", "/v1/solves/slv_0000000000000000", None),
    ("POST", "/v1/solves/slv_0000000000000000/events", b"{}"),
    ("GET", "/v1/stats", None),
    ("GET", "/v1/audit/verify", None),
    ("GET", "/metrics", None),
    ("GET", "/openapi.json", None),
    ("POST", "/mcp", b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}'),
]


def status_of(req: urllib.request.Request) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, {}
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@pytest.mark.parametrize(
    ("method", "path", "body"), ENDPOINTS, ids=[f"{m} {p}" for m, p, _ in ENDPOINTS]
)
@pytest.mark.parametrize("token", ["", "garbage", "sbd_000000000000_" + "x" * 43])
def test_every_endpoint_needs_a_valid_token(
    daemon: Daemon, method: str, path: str, body: bytes | None, token: str
) -> None:
    status, err = status_of(daemon.request(path, data=body, method=method, token=token))
    assert status == 401
    assert err["error"]["code"] == "unauthorized"  # type: ignore[index]


def test_every_route_is_in_the_token_test() -> None:
    """A route added without being listed above fails here, so none escapes the 401 check."""
    listed = [(m, p) for m, p, _ in ENDPOINTS]
    public = routes.public_paths()
    for table in routes.TABLES:
        for d in table:
            if not isinstance(d, web.RouteDef) or d.path in public:
                continue
            pattern = re.sub(r"\{[^}:]+:([^}]+)\}", r"(\1)", d.path)
            pattern = re.sub(r"\{[^}]+\}", "[^/]+", pattern)
            assert any(m == d.method and re.fullmatch(pattern, p) for m, p in listed), (
                f"{d.method} {d.path} is not in ENDPOINTS"
            )


def test_healthz_is_public(daemon: Daemon) -> None:
    with urllib.request.urlopen(daemon.url + "/healthz", timeout=10) as resp:
        assert resp.status == 200


def test_admin_token_file_is_private(daemon: Daemon) -> None:
    mode = os.stat(daemon.state_dir / "admin.token").st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_wrong_scope_is_403(daemon: Daemon) -> None:
    run_only = daemon.make_token("scopes", "run")
    with daemon.client(run_only) as c:
        assert c.run(code="print(1)").status == "ok"
        for call in (c.list_sandboxes, lambda: c.audit(), c.metrics, lambda: c.create_sandbox()):
            with pytest.raises(Forbidden):
                call()
    sandboxes_only = daemon.make_token("scopes", "sandboxes")
    with daemon.client(sandboxes_only) as c:
        with pytest.raises(Forbidden):
            c.run(code="print(1)")
        assert c.list_sandboxes() == []


def test_revoked_token_is_401(daemon: Daemon) -> None:
    token = daemon.make_token("revokee", "run")
    token_id = token.split("_")[1]
    with daemon.client(token) as c:
        assert c.run(code="print(1)").status == "ok"
        listed = daemon.cli("token", "list", "--tenant", "revokee")
        assert token_id in listed.stdout and token not in listed.stdout
        assert daemon.cli("token", "revoke", token_id).returncode == 0
        with pytest.raises(Unauthorized) as err:
            c.run(code="print(1)")
        assert "revoked" in err.value.message
    again = daemon.cli("token", "revoke", token_id)
    assert again.returncode != 0 and again.stderr.count("\n") == 1


def test_token_cli_refuses_bad_input(daemon: Daemon) -> None:
    bad_tenant = daemon.cli("token", "create", "--tenant", "Bad Tenant!", "--scope", "run")
    assert bad_tenant.returncode != 0 and "tenant" in bad_tenant.stderr
    bad_scope = daemon.cli("token", "create", "--tenant", "t", "--scope", "root")
    assert bad_scope.returncode != 0


@pytest.fixture
def two_tenants(daemon: Daemon) -> Iterator[tuple[str, str]]:
    scopes = ("run", "sandboxes", "audit:read", "metrics")
    yield daemon.make_token("alice", *scopes), daemon.make_token("bob", *scopes)  # noqa: PT022


def test_tenants_are_isolated_on_every_endpoint(
    daemon: Daemon, two_tenants: tuple[str, str]
) -> None:
    alice, bob = two_tenants
    with daemon.client(alice) as a:
        sb = a.create_sandbox(limits={"disk_mib": 4})
        a.put_file(sb.id, "secret.txt", b"alice only")
        run = a.run(code="print('alice run')")
        assert a.get_run(run.id).result.stdout == "alice run\n"  # type: ignore[union-attr]
    with daemon.client(bob) as b:
        calls = [
            lambda: b.get_sandbox(sb.id),
            lambda: b.delete_sandbox(sb.id),
            lambda: b.run_in_sandbox(sb.id, code="print(1)"),
            lambda: b.get_file(sb.id, "secret.txt"),
            lambda: b.put_file(sb.id, "x", b"x"),
            lambda: b.delete_file(sb.id, "secret.txt"),
            lambda: b.archive(sb.id),
            lambda: b.get_run(run.id),
        ]
        for call in calls:
            with pytest.raises(NotFound):
                call()
        assert b.list_sandboxes() == []
        b.run(code="print('bob run')")
        tenants = {r.tenant for r in b.audit(limit=1000).records}
        assert tenants == {"bob"}
    with daemon.client(alice) as a:
        assert a.get_file(sb.id, "secret.txt") == b"alice only"
        a.delete_sandbox(sb.id)


def test_tenant_quotas(workdir: Path) -> None:
    d = Daemon(
        workdir,
        "quota",
        tenants={"q": {"max_concurrent_runs": 1, "max_sandboxes": 2, "max_disk_mib": 12}},
    ).start()
    try:
        token = d.make_token("q", "run", "sandboxes")
        with d.client(token) as c:
            first = c.create_sandbox(limits={"disk_mib": 8})
            with pytest.raises(QuotaExceeded) as err:
                c.create_sandbox(limits={"disk_mib": 8})
            assert err.value.field == "max_disk_mib"
            c.create_sandbox(limits={"disk_mib": 4})
            with pytest.raises(QuotaExceeded) as err:
                c.create_sandbox(limits={"disk_mib": 1})
            assert err.value.field == "max_sandboxes"
            c.delete_sandbox(first.id)
            c.create_sandbox(limits={"disk_mib": 8})  # room again

            done: list[str] = []
            body = json.dumps({"code": "import time; time.sleep(2)"}).encode()

            def slow() -> None:
                with urllib.request.urlopen(d.request("/v1/runs", body, token=token), timeout=30):
                    done.append("ok")

            t = threading.Thread(target=slow)
            t.start()
            for _ in range(100):
                with d.client() as admin:
                    if admin.info().active_runs:
                        break
                time.sleep(0.05)
            with pytest.raises(QuotaExceeded) as err:
                c.run(code="print(1)")
            assert err.value.field == "max_concurrent_runs"
            with d.client() as admin:  # another tenant is not held back by q's quota
                assert admin.run(code="print(2)").stdout == "2\n"
            t.join(timeout=30)
            assert done == ["ok"]
    finally:
        assert d.stop() == 0
