"""Signals, exit statuses and orphans inside a run behave as in a bare process on the host.

A jail's program used to be pid 1 of its pid namespace, where the kernel drops signals it has
no handler for (its own SIGKILL did nothing; abort() became SIGSEGV) and orphans stay zombies.
Every run now starts under an init (tini; docker-init on Docker): each case here runs as a
plain host subprocess and on every backend, in a jail or container built for the run and in a
warm one (python's pool, and the exec pool), and must read the same; so too under nsjail
with a `rootfs` (the Docker image's userland, where the init is bind-mounted at /dev/init).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BACKENDS, DOCKER_PROBLEM, assert_no_leftovers
from tests.daemon import Daemon
from tests.jail.test_pool import pool, wait_ready

ZOMBIE = """\
import os, time
r, w = os.pipe()
child = os.fork()
if child == 0:  # forks an orphan and exits: the orphan is the init's to reap
    orphan = os.fork()
    if orphan == 0:
        os._exit(0)
    os.write(w, str(orphan).encode())
    os._exit(0)
os.waitpid(child, 0)
orphan = int(os.read(r, 32))
deadline = time.monotonic() + 5
state = "?"
while time.monotonic() < deadline:
    try:
        with open(f"/proc/{orphan}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):  # (the latter: while it is reaped)
        print("reaped")
        break
    time.sleep(0.01)
else:
    print("left as", state)
"""
#: (language, code, extra request fields): each must read as it does on the host.
CASES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "self SIGKILL": (
        "python",
        "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\nprint('survived')\n",
        {},
    ),
    "self SIGKILL, exec jail": (
        "python",
        "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\nprint('survived')\n",
        {"env": {"PYTHONDONTWRITEBYTECODE": "1"}},  # a start-up variable: the exec pool
    ),
    "bash kill -TERM $$": ("bash", "kill -TERM $$\necho survived\n", {}),
    "abort": ("python", "import os\nos.abort()\n", {}),
    "orphan reaped": ("python", ZOMBIE, {}),
    "exit 3": ("bash", "echo out\nexit 3\n", {}),
}
EXPECTED = {
    "self SIGKILL": ("killed", None, "SIGKILL", ""),
    "self SIGKILL, exec jail": ("killed", None, "SIGKILL", ""),
    "bash kill -TERM $$": ("killed", None, "SIGTERM", ""),
    "abort": ("killed", None, "SIGABRT", ""),
    "orphan reaped": ("ok", 0, None, "reaped\n"),
    "exit 3": ("failed", 3, None, "out\n"),
}
Seen = tuple[str, int | None, str | None, str]


def on_the_host(name: str, tmp: Path) -> Seen:
    """The case as a bare subprocess of the test (its own session, as a daemon's)."""
    language, code, fields = CASES[name]
    argv = [sys.executable, "-c", code] if language == "python" else ["bash", "-c", code]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **fields.get("env", {})}
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=30, cwd=tmp, env=env, start_new_session=True
    )
    if proc.returncode < 0:
        return ("killed", None, signal.Signals(-proc.returncode).name, proc.stdout)
    return ("ok" if proc.returncode == 0 else "failed", proc.returncode, None, proc.stdout)


@pytest.fixture(scope="module")
def daemons(workdir: Path) -> Iterator[dict[str, Daemon]]:
    """`warm`: pools of one on both backends; `cold`: no pool (every run builds its own)."""
    docker = "docker" in BACKENDS
    one = {"min_size": 1, "max_size": 1}
    warm = Daemon(
        workdir,
        "sig-warm",
        backend={"pool": one},
        docker={"enabled": docker, "pool": one},
    ).start()
    cold = Daemon(
        workdir,
        "sig-cold",
        backend={"pool": {"enabled": False}},
        docker={"enabled": docker, "pool": {"enabled": False}},
    ).start()
    yield {"warm": warm, "cold": cold}
    assert warm.stop() == 0 and cold.stop() == 0


def profile_of(backend: str, language: str, fields: dict[str, Any]) -> str:
    kind = "python" if language == "python" and not fields.get("env") else "exec"
    return f"{backend}/{kind}"


@pytest.mark.parametrize("mode", ["cold", "warm"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CASES))
def test_a_run_reads_as_a_bare_process(
    daemons: dict[str, Daemon], tmp_path: Path, name: str, backend: str, mode: str
) -> None:
    language, code, fields = CASES[name]
    host = on_the_host(name, tmp_path)
    assert host == EXPECTED[name], "the host itself must behave as expected"
    d = daemons[mode]
    with d.client() as c:
        profile = profile_of(backend, language, fields)
        before = wait_ready(c, profile).hits if mode == "warm" else 0
        r = c.run(backend=backend, language=language, code=code, **fields)
        if mode == "warm":
            assert pool(c, profile).hits == before + 1, f"the run must take a {profile} jail"
    assert (r.status, r.exit_code, r.signal, r.stdout) == host, r
    assert "survived" not in r.stdout


@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_minus_one_from_a_child_ends_the_run(daemons: dict[str, Daemon], backend: str) -> None:
    """kill(-1, SIGKILL) reaches every process of the run but its init: the main process too
    (pid 2), on both backends alike (THREAT_MODEL.md). Not compared with the host, where it
    would reach every process of the caller's user."""
    code = (
        "import subprocess, sys\n"
        "subprocess.run([sys.executable, '-c', 'import os; os.kill(-1, 9)'])\n"
        "print('survived')\n"
    )
    with daemons["cold"].client() as c:
        r = c.run(backend=backend, code=code)
    assert (r.status, r.signal, r.stdout) == ("killed", "SIGKILL", ""), r


@pytest.fixture(scope="module")
def rootfs_daemon(workdir: Path) -> Iterator[Daemon]:
    if DOCKER_PROBLEM is not None:
        pytest.skip(f"no image to export a rootfs from: {DOCKER_PROBLEM}")
    rootfs = workdir / "rootfs-signals"
    proc = subprocess.run(
        [sys.executable, "-m", "sandboxd", "images", "export", "python", str(rootfs)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    pools = {"min_size": 1, "max_size": 1}
    d = Daemon(workdir, "sig-rootfs", backend={"rootfs": str(rootfs), "pool": pools}).start()
    yield d
    assert d.stop() == 0


@pytest.mark.timeout(1800)  # its fixture may export an image (up to 900 s)
@pytest.mark.parametrize("mode", ["cold", "warm"])
@pytest.mark.parametrize("name", list(CASES))
def test_a_run_on_a_rootfs_reads_as_a_bare_process(
    rootfs_daemon: Daemon, tmp_path: Path, name: str, mode: str
) -> None:
    language, code, fields = CASES[name]
    interpreter = "/usr/bin/python3" if language == "python" else "/bin/bash"
    with rootfs_daemon.client() as c:
        if mode == "cold":  # a program named by path takes a jail built for it
            r = c.run(command=[interpreter, "-c", code], **fields)
        else:
            profile = profile_of("nsjail", language, fields)
            before = wait_ready(c, profile).hits
            r = c.run(language=language, code=code, **fields)
            assert pool(c, profile).hits == before + 1
    assert (r.status, r.exit_code, r.signal, r.stdout) == on_the_host(name, tmp_path), r


def test_no_leftovers(daemons: dict[str, Daemon]) -> None:
    for d in daemons.values():
        assert_no_leftovers(d)
