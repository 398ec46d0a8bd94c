"""Every limit, enforced from outside the jail, ends the run with its status; partial output
is kept and nothing of the run survives it."""

from __future__ import annotations

import time

import pytest

from sandboxd.client import SyncClient
from sandboxd.testing import sandbox_processes
from tests.conftest import JAIL_PATHS, BackendClient, on_every_jail_path
from tests.daemon import Daemon

pytestmark = pytest.mark.usefixtures("no_leftovers")


@pytest.fixture(scope="session", params=JAIL_PATHS)
def daemon(request: pytest.FixtureRequest, daemon: Daemon) -> Daemon:
    """Every limit holds on every way a jail is made (warm, forked)."""
    return on_every_jail_path(request, daemon)


@pytest.fixture
def client(backend_client: SyncClient) -> SyncClient:
    return backend_client


def test_wall_timeout_keeps_partial_output(client: SyncClient) -> None:
    started = time.monotonic()
    result = client.run(
        code="import time\nprint('before', flush=True)\ntime.sleep(60)\nprint('after')",
        limits={"wall_time_s": 1},
    )
    assert result.status == "timeout"
    assert result.stdout == "before\n"
    assert 1.0 <= result.usage.wall_time_s < 3
    assert time.monotonic() - started < 10


def test_timeout_kills_process_that_ignores_sigterm(client: SyncClient) -> None:
    result = client.run(
        language="bash",
        code="trap '' TERM INT HUP; echo armed; while :; do sleep 0.1; done",
        limits={"wall_time_s": 0.5},
    )
    assert result.status == "timeout"
    assert result.stdout == "armed\n"


def test_cpu_limit_counts_the_whole_tree(client: SyncClient) -> None:
    # Two busy children: each under the limit alone, together over it.
    code = (
        "import multiprocessing as mp\n"
        "def spin():\n    while True: pass\n"
        "ps = [mp.Process(target=spin) for _ in range(2)]\n"
        "[p.start() for p in ps]\n[p.join() for p in ps]\n"
    )
    result = client.run(code=code, limits={"cpu_time_s": 1, "wall_time_s": 20})
    assert result.status == "cpu_limit"
    assert 1.0 <= result.usage.cpu_time_s < 3
    assert result.usage.wall_time_s < 10


def test_memory_limit(client: SyncClient) -> None:
    result = client.run(
        code="print('allocating', flush=True)\nx = bytearray(200 * 1024 * 1024)\nprint('no')",
        limits={"memory_mib": 64},
    )
    assert result.status == "memory_limit"
    assert result.stdout == "allocating\n"
    assert result.usage.peak_memory_mib <= 64 + 8 + 1


def test_memory_limit_across_many_processes(client: SyncClient) -> None:
    # Eight children with 24 MiB each: every one is under 64 MiB, the tree is not.
    code = (
        "import multiprocessing as mp, time\n"
        "def hold():\n    b = bytearray(24 * 1024 * 1024); time.sleep(2)\n"
        "ps = [mp.Process(target=hold) for _ in range(8)]\n"
        "[p.start() for p in ps]\n[p.join() for p in ps]\n"
        "import sys; sys.exit(1 if any(p.exitcode for p in ps) else 0)\n"
    )
    result = client.run(code=code, limits={"memory_mib": 64, "wall_time_s": 20})
    assert result.status == "memory_limit", result


def test_memory_within_limit_is_fine(client: SyncClient) -> None:
    result = client.run(code="x = bytearray(32 * 1024 * 1024); print(len(x))")
    assert result.status == "ok"
    if client.backend == "nsjail":  # type: ignore[attr-defined]
        # docker removes the container's cgroup at exit: a short run's peak may go unsampled
        assert result.usage.peak_memory_mib >= 32


def test_fork_bomb_is_contained(client: SyncClient) -> None:
    result = client.run(
        language="bash", code=":(){ :|:& };:; sleep 30", limits={"pids": 16, "wall_time_s": 2}
    )
    assert result.status == "timeout"
    assert result.message is not None and "pids limit of 16 refused" in result.message
    after = client.run(code="print('still fine')")
    assert after.stdout == "still fine\n"


def test_thread_limit(client: SyncClient) -> None:
    code = (
        "import threading, time\nts = []\n"
        "try:\n"
        "    for _ in range(100):\n"
        "        t = threading.Thread(target=time.sleep, args=(5,)); t.start(); ts.append(t)\n"
        "except RuntimeError as e:\n    print('refused after', len(ts), e)\n"
    )
    result = client.run(code=code, limits={"pids": 10})
    assert result.stdout.startswith("refused after ")
    assert int(result.stdout.split()[2]) < 10


@pytest.mark.parametrize("profile", ["python", "exec"])
def test_pids_counts_the_program_and_nothing_of_the_daemons(
    backend_client: BackendClient, profile: str
) -> None:
    """`pids: 6` is six threads of the program's own: neither the supervisor nor the jail's
    init takes one of them (a cold jail, the python pool and the exec pool alike)."""
    code = (
        "import threading, time\nts = []\n"
        "try:\n"
        "    for _ in range(20):\n"
        "        t = threading.Thread(target=time.sleep, args=(3,)); t.start(); ts.append(t)\n"
        "except RuntimeError:\n    print(len(ts) + 1)\n"
    )
    env = {"PYTHONHASHSEED": "0"} if profile == "exec" else {}
    result = backend_client.run(code=code, env=env, limits={"pids": 6})
    assert result.stdout == "6\n", result


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_output_flood(client: SyncClient, stream: str) -> None:
    code = f"import sys\nwhile True: sys.{stream}.write('y' * 65536)"
    result = client.run(code=code, limits={"output_bytes": 100_000})
    assert result.status == "output_limit"
    flooded = getattr(result, stream)
    assert len(flooded) == 100_000
    assert set(flooded) == {"y"}
    assert getattr(result, f"{stream}_truncated") is True


def test_output_under_limit_is_complete(client: SyncClient) -> None:
    result = client.run(code="print('z' * 99_999)", limits={"output_bytes": 100_000})
    assert result.status == "ok"
    assert len(result.stdout) == 100_000
    assert result.stdout_truncated is False


def test_file_size_limit(client: SyncClient) -> None:
    code = (
        "f = open('big', 'wb')\n"
        "try:\n    f.write(b'x' * 3 * 1024 * 1024); f.flush()\n"
        "except OSError as e:\n    print('refused:', e.strerror); raise SystemExit(3)\n"
    )
    result = client.run(code=code, limits={"file_size_mib": 1})
    assert result.status == "failed"
    assert result.stdout == "refused: File too large\n"


def test_file_size_limit_kills_programs_that_do_not_catch_it(client: SyncClient) -> None:
    result = client.run(
        language="bash", code="head -c 3000000 /dev/zero > big", limits={"file_size_mib": 1}
    )
    # bash reports its child's SIGXFSZ as exit 153; under docker-init that reads as a signal.
    assert (result.status, result.exit_code, result.signal) in (
        ("failed", 153, None),
        ("killed", None, "SIGXFSZ"),
    )


@pytest.mark.parametrize("where", ["/workspace", "/tmp", "/dev/shm"])
def test_disk_full(client: SyncClient, where: str) -> None:
    code = (
        f"import os\nf = open('{where}/fill', 'wb')\n"
        "try:\n"
        "    for _ in range(64): f.write(b'x' * 1024 * 1024); f.flush()\n"
        "except OSError as e:\n"
        "    print('full:', e.strerror, os.path.getsize(f.name) // 1024 // 1024)\n"
    )
    result = client.run(code=code, limits={"disk_mib": 8})
    assert result.status == "ok", result
    words = result.stdout.split()
    assert words[:5] == ["full:", "No", "space", "left", "on"]
    assert int(words[-1]) <= 8


def test_inodes_are_capped(client: SyncClient) -> None:
    code = (
        "import os\nn = 0\n"
        "try:\n    while n < 100000: open(f'f{n}', 'w').close(); n += 1\n"
        "except OSError as e:\n    print(e.strerror, n)\n"
    )
    result = client.run(code=code, limits={"disk_mib": 8})
    assert result.stdout.startswith("No space left on device")
    assert int(result.stdout.split()[-1]) < 2000


def test_double_forked_daemon_does_not_survive(client: SyncClient) -> None:
    code = (
        "( setsid bash -c 'trap \"\" HUP TERM; exec sleep 1234.5' & ) ; "
        "nohup sleep 1234.6 >/dev/null 2>&1 & disown; echo spawned"
    )
    result = client.run(language="bash", code=code)
    assert result.status == "ok"
    assert result.stdout == "spawned\n"
    assert sandbox_processes() == []


def test_timeout_kills_background_children_too(client: SyncClient) -> None:
    code = "( setsid sleep 1234.7 & ); sleep 1234.8 & sleep 60"
    result = client.run(language="bash", code=code, limits={"wall_time_s": 0.5})
    assert result.status == "timeout"
    assert sandbox_processes() == []
