"""Interpreter contexts: a Jupyter kernel in a sandbox whose state survives between
executions, within the sandbox's limits, tenant-scoped, and reached only over sockets the
daemon holds (a sandbox that swaps them for symlinks changes nothing)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import stat
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandboxd.client import Client, SyncClient
from sandboxd.errors import Conflict, InvalidRequest, NotFound
from sandboxd.models import ExecutionResult
from sandboxd.testing import leftover_cgroups, sandbox_processes
from tests.conftest import BackendClient
from tests.daemon import Daemon

pytestmark = pytest.mark.usefixtures("no_leftovers")


RUNS_DIR = {"nsjail": "runs", "docker": "docker-runs"}


@pytest.fixture
def sandbox(backend_client: BackendClient) -> Iterator[str]:
    """A sandbox on each backend in turn (`client` is the same daemon's, any backend)."""
    sandbox_id = backend_client.create_sandbox(language="python", limits={"disk_mib": 32}).id
    yield sandbox_id
    with contextlib.suppress(NotFound):
        backend_client.delete_sandbox(sandbox_id)


def context_is_running(daemon: Daemon, backend: str, context_id: str) -> bool:
    """Whether anything of the context's jail or container is left on the host."""
    if backend == "docker":
        found = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=sandboxd.run={context_id}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return bool(found.stdout.strip())
    return context_id in {g.name for g in leftover_cgroups(daemon.cgroup_parent)}


def test_state_persists_between_executions(client: SyncClient, sandbox: str) -> None:
    ctx = client.create_context(sandbox, cwd="sub", env={"GREETING": "hello"})
    assert ctx.id.startswith("ctx_") and ctx.status == "idle" and ctx.cwd == "sub"
    first = client.execute(
        sandbox,
        ctx.id,
        "import os, math\nx = 41\nnotes = open('notes.txt', 'w')\nnotes.write('one ')\n"
        "print(os.getcwd(), os.environ['GREETING'])",
    )
    assert first.status == "ok", first
    assert first.stdout == "/workspace/sub hello\n"
    # Variables, imports and the open file are still there.
    second = client.execute(
        sandbox, ctx.id, "notes.write('two'); notes.flush(); math.floor(x + 1.5)"
    )
    assert second.status == "ok", second
    assert [(r.mime, r.data, r.is_result) for r in second.results] == [("text/plain", "42", True)]
    assert second.execution_count == first.execution_count + 1  # type: ignore[operator]
    # Files are the sandbox's workspace: the file API and runs see them.
    assert client.get_file(sandbox, "sub/notes.txt") == b"one two"
    run = client.run_in_sandbox(sandbox, code="print(open('sub/notes.txt').read())")
    assert run.status == "ok" and run.stdout == "one two\n"
    failed = client.execute(sandbox, ctx.id, "print('before'); 1/0")
    assert failed.status == "error" and failed.stdout == "before\n"
    assert failed.error is not None and failed.error.name == "ZeroDivisionError"
    assert any("1/0" in line for line in failed.error.traceback)
    assert not any("\x1b" in line for line in failed.error.traceback)
    listed = client.list_contexts(sandbox)
    assert [c.id for c in listed] == [ctx.id]
    assert client.get_context(sandbox, ctx.id).execution_count == failed.execution_count
    client.delete_context(sandbox, ctx.id)
    with pytest.raises(NotFound):
        client.execute(sandbox, ctx.id, "x")
    assert client.list_contexts(sandbox) == []


def _execute_in_thread(
    client: SyncClient, sandbox: str, context_id: str, code: str, timeout_s: float
) -> tuple[threading.Thread, list[ExecutionResult]]:
    out: list[ExecutionResult] = []

    def go() -> None:
        with SyncClient(client.url, token=client._client.token) as c:
            out.append(c.execute(sandbox, context_id, code, timeout_s=timeout_s))

    thread = threading.Thread(target=go)
    thread.start()
    return thread, out


def test_interrupt_stops_a_loop_and_keeps_the_state(client: SyncClient, sandbox: str) -> None:
    ctx = client.create_context(sandbox)
    assert client.execute(sandbox, ctx.id, "kept = 'still here'").status == "ok"
    thread, out = _execute_in_thread(client, sandbox, ctx.id, "n = 0\nwhile True:\n    n += 1", 60)
    deadline = time.monotonic() + 30
    while client.get_context(sandbox, ctx.id).status != "busy" and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    client.interrupt_context(sandbox, ctx.id)
    thread.join(30)
    assert out and out[0].status == "interrupted", out
    assert out[0].error is not None and out[0].error.name == "KeyboardInterrupt"
    after = client.execute(sandbox, ctx.id, "print(kept, n > 0)")
    assert after.status == "ok" and after.stdout == "still here True\n"


def test_wall_timeout_interrupts_then_kills(client: SyncClient, sandbox: str) -> None:
    ctx = client.create_context(sandbox)
    client.execute(sandbox, ctx.id, "kept = 1")
    slow = client.execute(sandbox, ctx.id, "import time\ntime.sleep(60)", timeout_s=1)
    assert slow.status == "timeout" and "wall time" in (slow.message or "")
    assert client.execute(sandbox, ctx.id, "kept + 1").results[0].data == "2"
    # Code that ignores the interrupt: the kernel is killed, and the context says so.
    stubborn = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: pass"
    killed = client.execute(sandbox, ctx.id, stubborn, timeout_s=1)
    assert killed.status == "timeout" and "killed" in (killed.message or ""), killed
    assert client.get_context(sandbox, ctx.id).status == "dead"
    with pytest.raises(Conflict, match="is gone"):
        client.execute(sandbox, ctx.id, "1")
    restarted = client.restart_context(sandbox, ctx.id)
    assert restarted.status == "idle" and restarted.execution_count == 0
    fresh = client.execute(sandbox, ctx.id, "'kept' in dir()")
    assert fresh.status == "ok" and fresh.results[0].data == "False"


def test_memory_limit_kills_the_kernel_and_says_so(backend_client: BackendClient) -> None:
    client = backend_client
    sandbox = client.create_sandbox(limits={"memory_mib": 96, "disk_mib": 16}).id
    try:
        ctx = client.create_context(sandbox)
        big = client.execute(sandbox, ctx.id, "hog = b'x' * (400 << 20)", timeout_s=30)
        assert big.status == "memory_limit", big
        assert "memory limit of 96 MiB" in (big.message or "")
        info = client.get_context(sandbox, ctx.id)
        assert info.status == "dead" and "memory" in (info.message or "")
        started = time.monotonic()
        with pytest.raises(Conflict, match="is gone"):
            client.execute(sandbox, ctx.id, "1+1")
        assert time.monotonic() - started < 5  # says so, instead of hanging
    finally:
        client.delete_sandbox(sandbox)


PLOT = """
import matplotlib.pyplot as plt
from IPython.display import HTML, JSON, SVG, display
plt.plot([1, 3, 2])
plt.show()
display(HTML('<b>bold</b>'))
display(JSON({'a': [1, 2]}))
display(SVG('<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"></svg>'))
"""


def test_rich_results(client: SyncClient, sandbox: str) -> None:
    ctx = client.create_context(sandbox)
    result = client.execute(sandbox, ctx.id, PLOT, timeout_s=60)
    assert result.status == "ok", result
    by_mime = {r.mime: r for r in result.results}
    png = base64.b64decode(by_mime["image/png"].data)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    assert by_mime["text/html"].data == "<b>bold</b>"
    assert json.loads(by_mime["application/json"].data) == {"a": [1, 2]}
    assert by_mime["image/svg+xml"].data.startswith("<svg")
    assert not any(r.is_result for r in result.results)
    assert len({r.display_id for r in result.results}) == 4


def test_streamed_execution(daemon: Daemon, client: SyncClient, sandbox: str) -> None:
    ctx = client.create_context(sandbox)

    async def collect() -> list[tuple[str, str | None]]:
        async with Client(daemon.url, token=daemon.token) as c:
            code = "import time\nprint('a', flush=True)\ntime.sleep(0.3)\nprint('b')\n7 * 6"
            return [
                (e.event, e.data or (e.output.data if e.output else None))
                async for e in c.stream_execute(sandbox, ctx.id, code)
            ]

    events = asyncio.run(collect())
    kinds = [k for k, _ in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert "".join(d or "" for k, d in events if k == "stdout") == "a\nb\n"
    assert ("result", "42") in events


def test_another_tenant_sees_nothing(daemon: Daemon) -> None:
    alice = daemon.make_token("ctx-alice", "sandboxes", "audit:read")
    bob = daemon.make_token("ctx-bob", "sandboxes")
    with daemon.client(alice) as a, daemon.client(bob) as b:
        sandbox = a.create_sandbox(limits={"disk_mib": 16}).id
        try:
            ctx = a.create_context(sandbox)
            for call in (
                lambda: b.get_context(sandbox, ctx.id),
                lambda: b.execute(sandbox, ctx.id, "1"),
                lambda: b.list_contexts(sandbox),
                lambda: b.interrupt_context(sandbox, ctx.id),
                lambda: b.restart_context(sandbox, ctx.id),
                lambda: b.delete_context(sandbox, ctx.id),
                lambda: b.create_context(sandbox),
            ):
                with pytest.raises(NotFound):
                    call()
            assert a.execute(sandbox, ctx.id, "1+1").results[0].data == "2"
            # Audited: alice's trail holds her calls, with the execution's status.
            records = a.audit(limit=1000).records
            actions = {(r.action, r.result.get("status")) for r in records}
            assert {("context.create", None), ("context.execute", "ok")} <= actions
            assert all(r.tenant == "ctx-alice" for r in records)
        finally:
            a.delete_sandbox(sandbox)


def test_bad_input_is_4xx(daemon: Daemon, client: SyncClient, sandbox: str) -> None:
    ctx = client.create_context(sandbox)
    base = f"/v1/sandboxes/{sandbox}/contexts"
    cases: list[tuple[str, str, bytes | None, int, str | None]] = [
        ("POST", base, b'{"cwd": "../up"}', 400, "cwd"),
        ("POST", base, b'{"cwd": "/abs"}', 400, "cwd"),
        ("POST", base, b'{"language": "cobol"}', 400, "language"),
        ("POST", base, b'{"env": {"BAD NAME": "x"}}', 400, "env"),
        ("POST", base, b'{"nope": 1}', 400, "nope"),
        ("POST", base, b"not json", 400, None),
        ("POST", f"{base}/{ctx.id}/execute", b"", 400, None),
        ("POST", f"{base}/{ctx.id}/execute", b'{"code": "1", "timeout_s": 0}', 400, "timeout_s"),
        ("POST", f"{base}/{ctx.id}/execute", b'{"code": "1", "timeout_s": 1e9}', 400, "timeout_s"),
        ("POST", f"{base}/{ctx.id}/execute", b'{"code": 5}', 400, "code"),
        ("POST", f"{base}/{ctx.id}/execute", b'{"code": "a\\u0000"}', 400, "code"),
        ("POST", f"{base}/ctx_nope/execute", b'{"code": "1"}', 400, "context_id"),
        ("POST", f"{base}/ctx_0000000000000000/execute", b'{"code": "1"}', 404, None),
        ("GET", "/v1/sandboxes/sbx_0000000000000000/contexts", None, 404, None),
        ("POST", "/v1/sandboxes/sbx_0000000000000000/contexts", b"{}", 404, None),
    ]
    streamed = [  # as a stream: refused the same way, before any stream starts (not a 200)
        (*case, "text/event-stream") for case in cases if case[1].endswith("/execute")
    ]
    for method, path, body, status, field, *accept in [*cases, *streamed]:
        req = daemon.request(path, data=body, method=method)
        if accept:
            req.add_header("Accept", accept[0])
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:  # loopback
                got, payload = resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            got, payload = exc.code, json.loads(exc.read())
        assert got == status, (method, path, body, payload)
        assert set(payload["error"]) == {"code", "message", "field"}
        if field is not None:
            assert (payload["error"]["field"] or "").startswith(field), payload
    # Nothing was left by the refused creations.
    assert [c.id for c in client.list_contexts(sandbox)] == [ctx.id]
    assert client.execute(sandbox, ctx.id, "1+1").status == "ok"


SWAP = """
import os, socket
results = {}
for name in ("shell", "iopub", "control"):
    path = "/run/sandboxd/kernel/" + name
    try:
        os.unlink(path)
        os.symlink("/var/run/docker.sock", path)
        results[name] = "swapped"
    except OSError as exc:
        results[name] = type(exc).__name__
try:
    os.rename("/run/sandboxd/kernel", "/run/sandboxd/moved")
    results["dir"] = "moved"
except OSError as exc:
    results["dir"] = type(exc).__name__
print(results)
"""


def test_swapping_the_socket_paths_changes_nothing(
    daemon: Daemon, backend_client: BackendClient, sandbox: str
) -> None:
    """The daemon never connects to a path of the jail's: it accepts on sockets it bound
    before the jail existed, in a directory the jail sees read-only. A kernel's code that
    tries to replace them with symlinks (to docker.sock, say) fails, and even a replaced path
    would never be followed: the daemon does not resolve it again."""
    client = backend_client
    ctx = client.create_context(sandbox)
    host_dir = daemon.state_dir / RUNS_DIR[backend_client.backend] / ctx.id / "k"
    before = {p.name: os.lstat(p) for p in host_dir.iterdir()}
    assert {n: stat.S_ISSOCK(s.st_mode) for n, s in before.items()} == dict.fromkeys(
        ("shell", "iopub", "control"), True
    )
    swap = client.execute(sandbox, ctx.id, SWAP)
    assert swap.status == "ok", swap
    assert "swapped" not in swap.stdout and "moved" not in swap.stdout, swap.stdout
    after = {p.name: os.lstat(p) for p in host_dir.iterdir()}
    assert {n: (s.st_ino, s.st_mode) for n, s in after.items()} == {
        n: (s.st_ino, s.st_mode) for n, s in before.items()
    }
    # The kernel's own user may connect to the daemon's sockets (it is the kernel); it cannot
    # make the daemon connect anywhere. The daemon still answers, and a run in the same
    # sandbox sees no socket directory at all.
    assert client.execute(sandbox, ctx.id, "6 * 7").results[0].data == "42"
    run = client.run_in_sandbox(sandbox, code="import os; print(os.path.exists('/run/sandboxd'))")
    assert run.stdout == "False\n"
    # Restart replaces the sockets with fresh ones, bound again by the daemon.
    client.restart_context(sandbox, ctx.id)
    assert client.execute(sandbox, ctx.id, "1+1").results[0].data == "2"


def test_no_leftovers_after_delete(daemon: Daemon, backend_client: BackendClient) -> None:
    client, backend = backend_client, backend_client.backend
    sandbox = client.create_sandbox(limits={"disk_mib": 16}).id
    first = client.create_context(sandbox)
    second = client.create_context(sandbox)
    for ctx in (first, second):
        assert (
            client.execute(
                sandbox,
                ctx.id,
                "import subprocess\nsubprocess.Popen(['sleep', '300'], start_new_session=True)\n1",
            ).status
            == "ok"
        )
    runs = daemon.state_dir / RUNS_DIR[backend]
    assert context_is_running(daemon, backend, first.id)
    assert context_is_running(daemon, backend, second.id)
    client.delete_context(sandbox, first.id)
    assert not (runs / first.id).exists()
    assert not context_is_running(daemon, backend, first.id)
    # Deleting the sandbox ends its other context, with the workspace still mounted until then.
    client.delete_sandbox(sandbox)
    assert not context_is_running(daemon, backend, second.id)
    assert not (runs / second.id).exists()
    assert sandbox_processes(uid_bases={daemon.uid_base}) == []


def test_a_kernel_that_cannot_start_is_refused(client: SyncClient) -> None:
    sandbox = client.create_sandbox(limits={"memory_mib": 16, "disk_mib": 16}).id
    try:
        with pytest.raises(InvalidRequest) as refused:
            client.create_context(sandbox)
        assert refused.value.field == "limits.memory_mib"
        assert client.list_contexts(sandbox) == []
    finally:
        client.delete_sandbox(sandbox)


SPIN = """
import threading
def spin():
    while True:
        pass
threading.Thread(target=spin, daemon=True).start()
"""


def test_idle_expiry_and_a_daemon_killed_leaves_no_kernel(workdir: Path) -> None:
    d = Daemon(workdir, "kernels", sandbox_sweep_s=0.2).start()
    try:
        with d.client() as c:
            sandbox = c.create_sandbox(limits={"disk_mib": 16}).id
            idle = c.create_context(sandbox, idle_timeout_s=1)
            c.execute(sandbox, idle.id, "x = 1")
            deadline = time.monotonic() + 20
            while c.get_context(sandbox, idle.id).status != "dead":
                assert time.monotonic() < deadline, "the idle context never expired"
                time.sleep(0.1)
            assert "expired" in (c.get_context(sandbox, idle.id).message or "")
            with pytest.raises(Conflict, match="expired"):
                c.execute(sandbox, idle.id, "x")
            # dead as soon as its kernel is stopped; its jail's cleanup follows
            while idle.id in {g.name for g in leftover_cgroups(d.cgroup_parent)}:
                assert time.monotonic() < deadline, "the expired context's jail stayed"
                time.sleep(0.1)
            # A thread an execution leaves spinning burns the context's cpu between
            # executions: past its cpu_time_s the sweep ends the context, and frees its jail.
            hot = c.create_sandbox(limits={"disk_mib": 16, "cpu_time_s": 1}).id
            spin = c.create_context(hot)
            started = c.execute(hot, spin.id, SPIN)
            assert started.status == "ok", started
            while c.get_context(hot, spin.id).status != "dead":
                assert time.monotonic() < deadline + 20, "the spinning context was never ended"
                time.sleep(0.1)
            assert "between executions" in (c.get_context(hot, spin.id).message or "")
            while spin.id in {g.name for g in leftover_cgroups(d.cgroup_parent)}:
                assert time.monotonic() < deadline + 30, "the dead context's jail stayed"
                time.sleep(0.1)
            c.delete_sandbox(hot)
            busy = c.create_context(sandbox)
            assert c.execute(sandbox, busy.id, "1").status == "ok"
        assert sandbox_processes(uid_bases={d.uid_base}) != []
        d.stop(sig=signal.SIGKILL)
        d = Daemon(workdir, "kernels", sandbox_sweep_s=0.2).start()
        assert sandbox_processes(uid_bases={d.uid_base}) == []
        assert leftover_cgroups(d.cgroup_parent) == []
        with d.client() as c:
            assert c.list_contexts(sandbox) == []  # contexts do not outlive their daemon
            again = c.create_context(sandbox)
            assert c.execute(sandbox, again.id, "2 + 2").results[0].data == "4"
    finally:
        assert d.stop() == 0, d.log.read_text()[-3000:]


def test_output_past_the_cap_interrupts_and_keeps_the_state(backend_client: BackendClient) -> None:
    client = backend_client
    sandbox = client.create_sandbox(limits={"output_bytes": 4096, "disk_mib": 16}).id
    try:
        ctx = client.create_context(sandbox)
        client.execute(sandbox, ctx.id, "kept = 'yes'")
        flood = client.execute(sandbox, ctx.id, "while True:\n    print('x' * 100)", timeout_s=30)
        assert flood.status == "output_limit", flood
        assert flood.stdout_truncated and len(flood.stdout.encode()) <= 4096
        assert flood.stdout.startswith("x" * 100)
        assert client.execute(sandbox, ctx.id, "kept").results[0].data == "'yes'"
    finally:
        client.delete_sandbox(sandbox)


def test_a_stream_whose_client_goes_away_interrupts_its_execution(
    daemon: Daemon, client: SyncClient, sandbox: str
) -> None:
    ctx = client.create_context(sandbox)

    async def leave_early() -> None:
        async with Client(daemon.url, token=daemon.token) as c:
            code = "import time\nprint('started', flush=True)\nwhile True: time.sleep(0.05)"
            async for event in c.stream_execute(sandbox, ctx.id, code, timeout_s=120):
                if event.event == "stdout":
                    return  # closes the connection mid-execution

    asyncio.run(leave_early())
    deadline = time.monotonic() + 20
    while client.get_context(sandbox, ctx.id).status != "idle":
        assert time.monotonic() < deadline, "the execution went on after its client left"
        time.sleep(0.1)
    assert client.execute(sandbox, ctx.id, "1+1").results[0].data == "2"


def test_cpu_time_per_execution_interrupts(backend_client: BackendClient) -> None:
    client = backend_client
    sandbox = client.create_sandbox(limits={"cpu_time_s": 1, "disk_mib": 16}).id
    try:
        ctx = client.create_context(sandbox)
        spin = client.execute(sandbox, ctx.id, "while True: pass", timeout_s=60)
        assert spin.status == "cpu_limit" and "cpu time of 1 s" in (spin.message or ""), spin
        assert spin.wall_time_s < 30
        # Each execution has its own cpu time: the next one runs.
        assert client.execute(sandbox, ctx.id, "sum(range(1000))").results[0].data == "499500"
    finally:
        client.delete_sandbox(sandbox)
