"""The warm pool: prepared jails that each serve one run, behave like a cold run, take the
run's limits, adapt in size, and leave nothing behind."""

from __future__ import annotations

import base64
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sandboxd.client import SyncClient
from sandboxd.models import PoolStats
from sandboxd.testing import leftover_cgroups
from tests.conftest import assert_no_leftovers
from tests.daemon import Daemon

PROBE = (
    "import os, sys\n"
    "print(sys.argv, __file__, __name__, sys.path[0], os.getcwd())\n"
    "print(sorted(os.environ))\n"
    "print(sys.orig_argv)\n"
)


def pool(client: SyncClient, name: str = "nsjail/python") -> PoolStats:
    return client.info().warm_pools[name]


def wait_ready(client: SyncClient, name: str = "nsjail/python") -> PoolStats:
    """The pool's stats once it is full and idle (at most 60 s)."""
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        stats = pool(client, name)
        if stats.ready >= 1 and stats.preparing == 0:
            return stats
        time.sleep(0.02)
    raise AssertionError(f"the pool did not refill: {pool(client, name)}")


@pytest.fixture(scope="module")
def pools(workdir: Path) -> Iterator[tuple[Daemon, Daemon]]:
    """A daemon with a pool of one or two, and one without a pool."""
    warm = Daemon(workdir, "warm", backend={"pool": {"min_size": 1, "max_size": 2}}).start()
    cold = Daemon(workdir, "cold", backend={"pool": {"enabled": False}}).start()
    yield warm, cold
    assert warm.stop() == 0 and cold.stop() == 0


def test_a_warm_run_looks_like_a_cold_one(pools: tuple[Daemon, Daemon]) -> None:
    warm, cold = pools
    with warm.client() as w, cold.client() as c:
        before = wait_ready(w).hits
        hot = w.run(code=PROBE, env={"GREETING": "hi"})
        assert pool(w).hits == before + 1, "the run must have been served by the pool"
        plain = c.run(code=PROBE, env={"GREETING": "hi"})
        assert "nsjail/python" not in c.info().warm_pools
    assert (hot.status, hot.stdout, hot.stderr) == (plain.status, plain.stdout, plain.stderr)
    assert "['main.py'] /workspace/main.py __main__ /workspace /workspace" in hot.stdout


def test_a_warm_traceback_shows_only_the_program(pools: tuple[Daemon, Daemon]) -> None:
    warm, cold = pools
    code = "def f():\n    raise ValueError('boom')\nf()\n"
    with warm.client() as w, cold.client() as c:
        wait_ready(w)
        hot, plain = w.run(code=code), c.run(code=code)
    assert hot.stderr == plain.stderr and "<string>" not in hot.stderr
    assert (hot.status, hot.exit_code) == (plain.status, plain.exit_code) == ("failed", 1)
    with warm.client() as w:
        wait_ready(w)
        syntax = w.run(code="x = (\n")
    assert syntax.exit_code == 1 and "SyntaxError" in syntax.stderr and "_boot" not in syntax.stderr


EXITS = {
    "atexit": ("import atexit\natexit.register(lambda: print('bye'))\nprint('hi')", "hi\nbye\n"),
    "__del__ with its globals": (
        "import os\nclass C:\n    def __del__(self): print('del', os.sep)\nc = C()\nprint('made')",
        "made\ndel /\n",
    ),
    "__del__ in a cycle": (
        "class A:\n    def __del__(self): print('cycle')\na = A()\na.me = a\ndel a\nprint('x')",
        "x\ncycle\n",
    ),
    "unclosed file in __main__": (
        "f = open('/workspace/out.txt', 'w')\nf.write('data')\nprint('written')",
        "written\n",
    ),
    "unclosed file in an imported module": (
        "open('/workspace/helper.py', 'w').write("
        '\'f = open("/workspace/h.txt", "w")\\nf.write("helper")\\n\')\n'
        "import helper\nprint('imported')",
        "imported\n",
    ),
    "non-daemon thread": (
        "import threading, time\n"
        "def late():\n    time.sleep(0.2)\n    print('thread done')\n"
        "threading.Thread(target=late).start()\nprint('main done')",
        "main done\nthread done\n",
    ),
    "sys.exit with a message": ("import sys\nsys.exit('custom message')", ""),
    "SystemExit(3)": ("raise SystemExit(3)", ""),
    "sys.exit(-1)": ("import sys\nsys.exit(-1)", ""),
    "uncaught exception": ("raise KeyError('k')", ""),
    "C stdio buffer (full exit)": (
        "import ctypes\nlibc = ctypes.CDLL(None)\nlibc.fopen.restype = ctypes.c_void_p\n"
        "fp = libc.fopen(b'/workspace/c.txt', b'w')\n"
        "libc.fputs(b'from C', ctypes.c_void_p(fp))\nprint('py')",
        "py\n",
    ),
}


@pytest.mark.parametrize("name", list(EXITS))
def test_a_warm_exit_behaves_like_a_cold_one(pools: tuple[Daemon, Daemon], name: str) -> None:
    """A warm run skips the interpreter's own teardown; nothing a program sees may change."""
    code, stdout = EXITS[name]
    warm, cold = pools
    collect = ["out.txt", "h.txt", "c.txt"]
    with warm.client() as w, cold.client() as c:
        before = wait_ready(w).hits
        hot = w.run(code=code, collect=collect)
        assert pool(w).hits == before + 1
        plain = c.run(code=code, collect=collect)
    seen = [(r.stdout, r.stderr, r.exit_code, r.files) for r in (hot, plain)]
    assert seen[0] == seen[1]
    assert hot.stdout == stdout
    expected = {
        "unclosed file in __main__": {"out.txt": "data"},
        "unclosed file in an imported module": {"h.txt": "helper"},
        "C stdio buffer (full exit)": {"c.txt": "from C"},
    }.get(name, {})
    assert {f.path: base64.b64decode(f.content).decode() for f in hot.files} == expected
    status = {"sys.exit with a message": 1, "SystemExit(3)": 3, "sys.exit(-1)": 255}
    assert hot.exit_code == status.get(name, 1 if name == "uncaught exception" else 0)
    if name == "sys.exit with a message":
        assert hot.stderr == "custom message\n"


def test_stdin_and_exit_status(pools: tuple[Daemon, Daemon]) -> None:
    warm, _ = pools
    with warm.client() as w:
        wait_ready(w)
        r = w.run(
            code="import sys\ndata = sys.stdin.read()\nprint(data[::-1])\nsys.exit(3)", stdin="abc"
        )
    assert (r.stdout, r.exit_code, r.status) == ("cba\n", 3, "failed")


@pytest.mark.parametrize(
    ("code", "limits", "status"),
    [
        ("x = bytearray(200 * 1024 * 1024)\nprint(len(x))", {"memory_mib": 64}, "memory_limit"),
        ("while True: pass", {"cpu_time_s": 1, "wall_time_s": 10}, "cpu_limit"),
        ("import time\ntime.sleep(5)", {"wall_time_s": 0.5}, "timeout"),
        ("import os\nwhile True: os.fork() and os.wait()", {"pids": 4, "wall_time_s": 3}, None),
        ("open('/workspace/big', 'wb').write(b'x' * 3 * 1024 * 1024)", {"file_size_mib": 1}, None),
        ("open('/tmp/big', 'wb').write(b'x' * 8 * 1024 * 1024)", {"disk_mib": 4}, "failed"),
    ],
)
def test_the_runs_limits_hold_in_a_warm_jail(
    pools: tuple[Daemon, Daemon], code: str, limits: dict[str, float], status: str | None
) -> None:
    warm, _ = pools
    with warm.client() as w:
        before = wait_ready(w).hits
        r = w.run(code=code, limits=limits)
        assert pool(w).hits == before + 1
    if status is not None:
        assert r.status == status, r
    else:
        assert r.status in ("failed", "killed", "timeout") and r.status != "ok", r
    if "file_size_mib" in limits:
        assert r.status in ("failed", "killed") and ("File too large" in r.stderr or r.signal)


def test_nothing_crosses_from_one_run_to_the_next(pools: tuple[Daemon, Daemon]) -> None:
    warm, _ = pools
    leave = (
        "import os\n"
        "open('/workspace/left', 'w').write('x'); open('/tmp/left', 'w').write('x')\n"
        "os.environ['LEFT'] = '1'\n"
        "import json; json.secret = 'left'\n"
        "print(os.getpid())\n"
    )
    look = (
        "import os, json\n"
        "print(os.listdir('/workspace'), os.listdir('/tmp'), 'LEFT' in os.environ,\n"
        "      getattr(json, 'secret', None))\n"
    )
    with warm.client() as w:
        wait_ready(w)
        first = w.run(code=leave)
        wait_ready(w)
        second = w.run(code=look)
    assert first.status == "ok"
    assert second.stdout == "['main.py'] [] False None\n"


@pytest.mark.parametrize(("profile", "language"), [("python", "python"), ("exec", "bash")])
def test_each_jail_serves_one_run_and_is_destroyed(
    pools: tuple[Daemon, Daemon], profile: str, language: str
) -> None:
    warm, _ = pools
    name = f"nsjail/{profile}"

    def jails() -> set[str]:
        return {p.name for p in leftover_cgroups(warm.cgroup_parent, include_warm=True)}

    with warm.client() as w:
        wait_ready(w, name)
        before = jails()
        hits = pool(w, name).hits
        w.run(language=language, code="print(1)" if language == "python" else "echo 1")
        assert pool(w, name).hits == hits + 1
        gone = wait_gone(jails, before)
        wait_ready(w, name)
    assert len(gone) == 1, "the used jail must be destroyed, and only it"
    assert jails() - before, "a new one is prepared"
    assert_no_leftovers(warm)


def wait_gone(current: Callable[[], set[str]], before: set[str]) -> set[str]:
    """What of `before` is gone once the cleanup after a run is over (at most 30 s)."""
    deadline = time.monotonic() + 30.0
    while not (gone := before - current()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return gone


def test_runs_that_need_their_own_jail_still_work(pools: tuple[Daemon, Daemon]) -> None:
    warm, _ = pools
    with warm.client() as w:
        python, exec_ = wait_ready(w), wait_ready(w, "nsjail/exec")
        # A program named by path may not exist: nsjail's own report of that is kept.
        missing = w.run(command=["/workspace/nope"])
        assert (missing.status, missing.exit_code) == ("failed", 127)
        assert missing.message is not None and "cannot execute /workspace/nope" in missing.message
        assert w.run(command=["/bin/echo", "x"]).stdout == "x\n"
        assert pool(w).hits == python.hits and pool(w, "nsjail/exec").hits == exec_.hits


# -- exec jails: bash, node, commands, python with start-up variables ------------------------

EXEC_PROBE = (
    'echo "$$ $0 $# $PWD"; env | sort\n'
    'grep -E "^(Sig|Cap|NoNewPrivs|Seccomp|Uid|Gid|Groups)" /proc/self/status\n'
    "cat /proc/self/limits; ls /proc/self/fd; tr '\\0' ' ' < /proc/$$/cmdline; echo\n"
    'read -r line; echo "stdin=$line"; cat; umask; ulimit -a\n'
)
EXEC_RUNS = {
    "bash probe": {"language": "bash", "code": EXEC_PROBE, "stdin": "one\ntwo\n", "env": {"E": ""}},
    "SIGPIPE kills a writer": {"language": "bash", "code": "yes | head -1; echo ${PIPESTATUS[@]}"},
    "bash exit status": {"language": "bash", "code": "echo out; echo err >&2; exit 7"},
    "node": {
        "language": "node",
        "code": "console.log(process.argv.slice(1), process.env.A, process.pid, process.cwd())",
        "env": {"A": "x"},
    },
    "python with a start-up variable": {
        "language": "python",
        "code": "import sys\nprint(sys.flags.optimize, sys.argv, sys.orig_argv)\nassert False",
        "env": {"PYTHONOPTIMIZE": "1"},
    },
    "command with an empty argument": {"command": ["printf", "[%s]", "", "a b"]},
    "command that is not installed": {"command": ["no-such-program", "x"]},
    "python command": {"command": ["python3", "-c", "import sys; print(sys.argv)", "a"]},
}


def ignored_signals(status: str) -> set[str]:
    """The names of the signals ignored per a /proc/PID/status text (SigIgn). The ones CPython
    ignores at start-up (SIGPIPE, SIGXFSZ) must be back at their default after a waiter's
    exec; others may be inherited from whatever started the daemon, as in a cold jail."""
    mask = int(status.split("SigIgn:\t")[1].split()[0], 16)
    return {signal.Signals(n).name for n in range(1, 32) if mask >> (n - 1) & 1}


@pytest.mark.parametrize("name", list(EXEC_RUNS))
def test_an_exec_jail_runs_like_a_cold_one(pools: tuple[Daemon, Daemon], name: str) -> None:
    """Everything a program can see of its process: pid, argv, env, signals, capabilities,
    seccomp, rlimits, fds, stdin, exit status."""
    warm, cold = pools
    request = EXEC_RUNS[name]
    with warm.client() as w, cold.client() as c:
        before = wait_ready(w, "nsjail/exec").hits
        hot = w.run(**request)  # type: ignore[arg-type]
        assert pool(w, "nsjail/exec").hits == before + 1, "the run must take an exec jail"
        plain = c.run(**request)  # type: ignore[arg-type]
    seen = [(r.status, r.exit_code, r.signal, r.stdout, r.stderr, r.message) for r in (hot, plain)]
    assert seen[0] == seen[1]
    expected = {
        "bash probe": "2 main.sh 0 /workspace",  # pid 2: the child of the jail's init
        "SIGPIPE kills a writer": "y\n141 0\n",
        "bash exit status": "out\n",
        "node": "[ '/workspace/main.js' ] x 2 /workspace\n",
        "python with a start-up variable": "1 ['main.py'] ['/usr/bin/python3', '-u', 'main.py']\n",
        "command with an empty argument": "[][a b]",
        "python command": "['-c', 'a']\n",
    }.get(name, "")
    assert hot.stdout.startswith(expected)
    if name == "bash probe":
        assert "stdin=one\ntwo\n" in hot.stdout and "CapEff:\t0000000000000000" in hot.stdout
        assert "NoNewPrivs:\t1\nSeccomp:\t2" in hot.stdout
        assert not ignored_signals(hot.stdout) & {"SIGPIPE", "SIGXFSZ", "SIGINT", "SIGTERM"}
    if name == "command that is not installed":
        assert (hot.exit_code, hot.status) == (127, "failed") and "no-such-program" in hot.stderr


@pytest.mark.parametrize(
    ("code", "limits", "status"),
    [
        ("python3 -c 'bytearray(200 << 20)'", {"memory_mib": 64}, "memory_limit"),
        ("while :; do :; done", {"cpu_time_s": 1, "wall_time_s": 10}, "cpu_limit"),
        ("sleep 5", {"wall_time_s": 0.5}, "timeout"),
        ("yes | head -c 100000", {"output_bytes": 1000}, "output_limit"),
        ("for i in 1 2 3 4 5 6 7 8; do sleep 2 & done; wait", {"pids": 4}, None),
        ("head -c 3M /dev/zero > /workspace/big", {"file_size_mib": 1}, "killed"),
        ("head -c 8M /dev/zero > /tmp/big", {"disk_mib": 4}, "failed"),
    ],
)
def test_the_runs_limits_hold_in_an_exec_jail(
    pools: tuple[Daemon, Daemon], code: str, limits: dict[str, float], status: str | None
) -> None:
    warm, _ = pools
    with warm.client() as w:
        before = wait_ready(w, "nsjail/exec").hits
        r = w.run(language="bash", code=code, limits=limits)
        assert pool(w, "nsjail/exec").hits == before + 1
    assert r.status == status or status is None, r
    if "pids" in limits:  # refused at 4 (the jail was made with 64); bash retries, or gives up
        assert "fork: retry: Resource temporarily unavailable" in r.stderr
        assert r.status in ("ok", "failed"), r
    if "file_size_mib" in limits:  # SIGXFSZ is at its default in the jail: head is killed
        # bash exits 128+25, which the init's status reads as that signal (as on Docker)
        assert (r.exit_code, r.signal) == (None, "SIGXFSZ"), r
    if "disk_mib" in limits:
        assert "No space left on device" in r.stderr


def test_the_pool_grows_under_load_and_never_leaks(pools: tuple[Daemon, Daemon]) -> None:
    warm, _ = pools
    with warm.client() as w:
        wait_ready(w)
        for _ in range(6):  # back to back: the pool runs dry and grows
            assert w.run(code="print(1)").stdout == "1\n"
        stats = pool(w)
        assert stats.misses >= 1 and stats.target == 2
        wait_ready(w)
    assert_no_leftovers(warm)
    warm_jails = {p.name for p in leftover_cgroups(warm.cgroup_parent, include_warm=True)}
    assert 1 <= len(warm_jails) <= 2 + 1  # python's pool grew to 2; exec's stayed at 1


def test_the_pool_refuses_nothing_when_disabled(pools: tuple[Daemon, Daemon]) -> None:
    _, cold = pools
    with cold.client() as c:
        assert c.run(code="print('cold')").stdout == "cold\n"
    assert_no_leftovers(cold)
    assert leftover_cgroups(cold.cgroup_parent, include_warm=True) == []
