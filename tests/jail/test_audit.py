"""The audit trail: every API action is recorded with its trace id and a digest (never a
secret); `sandboxd audit verify` detects each kind of tampering."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandboxd.client import SyncClient
from sandboxd.errors import Unauthorized
from tests.daemon import Daemon

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture(scope="module")
def audited(workdir: Path) -> Iterator[Daemon]:
    """A daemon that served a little of everything, then stopped (so its state can be copied)."""
    d = Daemon(workdir, "audited").start()
    with SyncClient(d.url, token=d.token, traceparent=f"00-{TRACE}-00f067aa0ba902b7-01") as c:
        c.run(code="print('audited')", env={"API_KEY": "super-secret-value"})
        sb = c.create_sandbox(limits={"disk_mib": 4})
        c.put_file(sb.id, "a.txt", b"a")
        c.get_file(sb.id, "a.txt")
        c.run_in_sandbox(sb.id, code="print(2)")
        c.delete_sandbox(sb.id)
    with d.client("sbd_000000000000_" + "x" * 43) as bad, pytest.raises(Unauthorized):
        bad.run(code="")
    assert d.stop() == 0
    yield d  # noqa: PT022  # typed as an Iterator fixture; no teardown


def copy_state(d: Daemon, dest: Path) -> Daemon:
    shutil.copytree(d.state_dir, dest, ignore=shutil.ignore_patterns("sandboxes", "runs"))
    clone = Daemon(d.workdir, "copy")
    clone.state_dir = dest
    return clone


def test_every_action_is_recorded(audited: Daemon) -> None:
    db = sqlite3.connect(audited.state_dir / "sandboxd.db")
    rows = db.execute("SELECT action, tenant, trace_id, request, result FROM audit").fetchall()
    actions = [r[0] for r in rows]
    for action in (
        "run.create",
        "sandbox.create",
        "file.put",
        "file.get",
        "sandbox.run",
        "sandbox.delete",
    ):
        assert action in actions
    traced = [r for r in rows if r[2] == TRACE]
    assert len(traced) == 6
    run = next(r for r in rows if r[0] == "run.create" and r[2] == TRACE)
    request, result = json.loads(run[3]), json.loads(run[4])
    assert request["env_names"] == ["API_KEY"] and len(request["code_sha256"]) == 64
    assert result["status"] == "ok" and result["http_status"] == 200
    denied = [json.loads(r[4]) for r in rows if r[1] is None]
    assert {"error": "unauthorized", "http_status": 401} in denied
    whole_db = (audited.state_dir / "sandboxd.db").read_bytes()
    assert b"super-secret-value" not in whole_db


def test_verify_passes_on_an_untouched_trail(audited: Daemon) -> None:
    proc = audited.cli("audit", "verify")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok: ")


def tamper(d: Daemon, tmp_path: Path, *statements: str) -> str:
    clone = copy_state(d, tmp_path / "state")
    db = sqlite3.connect(clone.state_dir / "sandboxd.db")
    for sql in statements:
        db.execute(sql)
    db.commit()
    db.close()
    proc = clone.cli("audit", "verify")
    assert proc.returncode == 1, proc.stdout
    assert proc.stderr.count("\n") == 1
    return proc.stderr


def test_edited_record_is_detected(audited: Daemon, tmp_path: Path) -> None:
    err = tamper(audited, tmp_path, "UPDATE audit SET tenant = 'mallory' WHERE seq = 3")
    assert "record 3" in err and "hash" in err


def test_edited_result_is_detected(audited: Daemon, tmp_path: Path) -> None:
    err = tamper(
        audited, tmp_path, "UPDATE audit SET result = '{\"http_status\": 200}' WHERE seq = 2"
    )
    assert "record 2" in err


def test_deleted_record_is_detected(audited: Daemon, tmp_path: Path) -> None:
    err = tamper(audited, tmp_path, "DELETE FROM audit WHERE seq = 4")
    assert "record 4 is missing" in err


def test_deleted_and_renumbered_is_detected(audited: Daemon, tmp_path: Path) -> None:
    err = tamper(
        audited,
        tmp_path,
        "DELETE FROM audit WHERE seq = 4",
        "UPDATE audit SET seq = seq - 1 WHERE seq > 4",
    )
    assert "record 4" in err


def test_reordered_records_are_detected(audited: Daemon, tmp_path: Path) -> None:
    err = tamper(
        audited,
        tmp_path,
        "UPDATE audit SET seq = -1 WHERE seq = 2",
        "UPDATE audit SET seq = 2 WHERE seq = 3",
        "UPDATE audit SET seq = 3 WHERE seq = -1",
    )
    assert "record 2" in err


def test_cut_off_tail_is_detected(audited: Daemon, tmp_path: Path) -> None:
    err = tamper(audited, tmp_path, "DELETE FROM audit WHERE seq = (SELECT MAX(seq) FROM audit)")
    assert "cut off" in err


def test_audit_api_pages_and_scopes(workdir: Path) -> None:
    d = Daemon(workdir, "auditapi").start()
    try:
        with d.client() as c:
            for _ in range(3):
                c.run(code="")
            page = c.audit(limit=2)
            assert [r.seq for r in page.records] == [1, 2] and page.next_after == 2
            rest = c.audit(after=2, limit=100)
            assert rest.records[0].seq == 3 and rest.next_after is None
            assert all(r.hash and r.prev_hash for r in rest.records)
        reader = d.make_token("readers", "audit:read")
        with d.client(reader) as r:
            mine = r.audit().records  # only its own tenant's: its token's creation
            assert [(x.tenant, x.action) for x in mine] == [("readers", "token.create")]
    finally:
        assert d.stop() == 0
