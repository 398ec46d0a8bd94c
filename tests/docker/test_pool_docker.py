"""Warm containers (Docker backend): prepared containers that each serve one run, behave like
a container made for the run, take the run's limits, and never delay a kill."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sandboxd.backends.docker.warm import DOCKER_PROFILES
from sandboxd.testing import leftover_containers
from tests.conftest import assert_no_leftovers
from tests.daemon import Daemon
from tests.jail.test_pool import PROBE, ignored_signals, pool, wait_gone, wait_ready

DOCKER = "docker/python"


def test_a_warm_container_runs_like_a_cold_one(daemon: Daemon) -> None:
    code = PROBE + "import sys\nprint(sys.stdin.read())\nraise ValueError('x')\n"
    with daemon.client() as client:
        before = wait_ready(client, DOCKER).hits
        hot = client.run(backend="docker", code=code, stdin="in", env={"A": "1"})
        assert pool(client, DOCKER).hits == before + 1
        # a memory limit of its own: a container made for the run
        plain = client.run(
            backend="docker", code=code, stdin="in", env={"A": "1"}, limits={"memory_mib": 200}
        )
        assert pool(client, DOCKER).hits == before + 1
    assert (hot.status, hot.exit_code) == (plain.status, plain.exit_code) == ("failed", 1)
    # A cold run with stdin goes through `sh` (which adds PWD) and names python3 by PATH.
    assert hot.stdout.splitlines()[0] == plain.stdout.splitlines()[0]
    assert hot.stderr == plain.stderr and "ValueError: x" in hot.stderr
    assert "in\n" in hot.stdout and "'A'" in hot.stdout
    assert_no_leftovers(daemon)


@pytest.mark.parametrize(
    ("code", "limits", "status"),
    [
        ("import time\ntime.sleep(5)", {"wall_time_s": 0.5}, "timeout"),
        ("while True: pass", {"cpu_time_s": 1, "wall_time_s": 10}, "cpu_limit"),
        ("print('x' * 100000)", {"output_bytes": 1000}, "output_limit"),
        ("open('/tmp/big', 'wb').write(b'x' * 8 * 1024 * 1024)", {"disk_mib": 4}, "failed"),
    ],
)
def test_the_runs_limits_hold_in_a_warm_container(
    daemon: Daemon, code: str, limits: dict[str, float], status: str
) -> None:
    with daemon.client() as client:
        before = wait_ready(client, DOCKER).hits
        result = client.run(backend="docker", code=code, limits=limits)
        assert pool(client, DOCKER).hits == before + 1
    assert result.status == status, result
    assert_no_leftovers(daemon)


def test_a_warm_container_serves_one_run(daemon: Daemon) -> None:
    def containers() -> set[str]:
        return set(leftover_containers(daemon.state_dir, include_warm=True))

    with daemon.client() as client:
        wait_ready(client, DOCKER)
        before = containers()
        first = client.run(backend="docker", code="open('/workspace/left','w').write('1')")
        gone = wait_gone(containers, before)
        wait_ready(client, DOCKER)
        second = client.run(backend="docker", code="import os; print(os.listdir('/workspace'))")
    assert first.status == "ok" and second.stdout == "['main.py']\n"
    assert len(gone) == 1, "the used container must be removed, and only it"


DOCKER_EXEC = "docker/exec"
DOCKER_PROBE = (
    'echo "$PPID $0 $# $PWD"; env | sort\n'
    'grep -E "^(Sig|Cap|NoNewPrivs|Seccomp)" /proc/self/status; ls /proc/self/fd\n'
    'read -r line; echo "stdin=$line"; cat; umask; ulimit -a\n'
    '[ "$(id -u)" -ne 0 ] && echo non-root\n'
)
DOCKER_EXEC_RUNS = {
    "bash probe": {"language": "bash", "code": DOCKER_PROBE, "stdin": "a\nb\n", "env": {"E": ""}},
    "bash exit status": {"language": "bash", "code": "echo out; echo err >&2; exit 7"},
    "command with an empty argument": {"command": ["printf", "[%s]", "", "a b"]},
    "command by a path that is missing": {"command": ["/workspace/nope"]},
    "python with a start-up variable": {
        "language": "python",
        "code": "import sys\nprint(sys.flags.optimize, sys.argv)\nassert False",
        "env": {"PYTHONOPTIMIZE": "1"},
    },
}


@pytest.mark.parametrize("name", list(DOCKER_EXEC_RUNS))
def test_an_exec_container_runs_like_a_cold_one(daemon: Daemon, name: str) -> None:
    request = {"backend": "docker", **DOCKER_EXEC_RUNS[name]}
    with daemon.client() as client:
        before = wait_ready(client, DOCKER_EXEC).hits
        hot = client.run(**request)  # type: ignore[arg-type]
        assert pool(client, DOCKER_EXEC).hits == before + 1, "the run must take an exec container"
        # a memory limit of its own: a container made for the run
        plain = client.run(**request, limits={"memory_mib": 200})  # type: ignore[arg-type]
        assert pool(client, DOCKER_EXEC).hits == before + 1
    seen = [(r.status, r.exit_code, r.signal, r.stdout, r.stderr) for r in (hot, plain)]
    assert seen[0] == seen[1]
    expected = {
        "bash probe": "1 main.sh 0 /workspace\n",
        "bash exit status": "out\n",
        "command with an empty argument": "[][a b]",
        "python with a start-up variable": "1 ['main.py']\n",
    }.get(name, "")
    assert hot.stdout.startswith(expected)
    if name == "bash probe":
        assert "stdin=a\nb\n" in hot.stdout and hot.stdout.endswith("non-root\n")
        assert "CapEff:\t0000000000000000" in hot.stdout and "NoNewPrivs:\t1" in hot.stdout
        assert "HOSTNAME" not in hot.stdout
        assert not ignored_signals(hot.stdout) & {"SIGPIPE", "SIGXFSZ", "SIGINT", "SIGTERM"}
    if name == "command by a path that is missing":
        assert (hot.status, hot.exit_code) == ("failed", 127) and "nope" in hot.stderr
    assert_no_leftovers(daemon)


@pytest.mark.parametrize(
    ("code", "limits", "status"),
    [
        ("sleep 5", {"wall_time_s": 0.5}, "timeout"),
        ("while :; do :; done", {"cpu_time_s": 1, "wall_time_s": 10}, "cpu_limit"),
        ("yes | head -c 100000", {"output_bytes": 1000}, "output_limit"),
        ("head -c 8M /dev/zero > /tmp/big", {"disk_mib": 4}, "failed"),
    ],
)
def test_the_runs_limits_hold_in_an_exec_container(
    daemon: Daemon, code: str, limits: dict[str, float], status: str
) -> None:
    with daemon.client() as client:
        before = wait_ready(client, DOCKER_EXEC).hits
        result = client.run(backend="docker", language="bash", code=code, limits=limits)
        assert pool(client, DOCKER_EXEC).hits == before + 1
    assert result.status == status, result
    assert_no_leftovers(daemon)


def test_many_warm_containers_never_delay_a_kill(workdir: Path) -> None:
    """Each live container is watched by a blocking call: with more of them than the loop's
    shared executor has threads, a kill queued behind them would wait for one to exit."""
    many = {"min_size": 5, "max_size": 5, "max_preparing": 4}
    crowded = Daemon(workdir, "crowded", docker={"enabled": True, "pool": many}).start()
    try:
        with crowded.client() as client:
            deadline = time.monotonic() + 120.0
            while time.monotonic() < deadline:
                pools = client.info().warm_pools
                if all(pools[f"docker/{p}"].ready == 5 for p in DOCKER_PROFILES):
                    break
                time.sleep(0.1)
            warm = leftover_containers(crowded.state_dir, include_warm=True)
            assert len(warm) == 5 * len(DOCKER_PROFILES)
            started = time.monotonic()
            slow = client.run(
                backend="docker", code="import time\ntime.sleep(30)", limits={"wall_time_s": 1}
            )
            took = time.monotonic() - started
            assert slow.status == "timeout" and took < 10, (slow, took)
            assert client.run(backend="docker", language="bash", code="echo ok").stdout == "ok\n"
    finally:
        assert crowded.stop() == 0
    assert leftover_containers(crowded.state_dir, include_warm=True) == []


def test_a_node_container_runs_like_a_cold_one(daemon: Daemon) -> None:
    code = (
        "console.log(process.argv.slice(1), process.env.A, process.cwd(), process.getuid() > 0)\n"
        "require('fs').readFileSync(0, 'utf8').split('\\n').forEach(l => console.log('in:' + l))\n"
        "process.exit(4)\n"
    )
    request = {"backend": "docker", "language": "node", "code": code, "stdin": "x\ny"}
    request["env"] = {"A": "1"}
    with daemon.client() as client:
        before = wait_ready(client, "docker/node").hits
        hot = client.run(**request)  # type: ignore[arg-type]
        assert pool(client, "docker/node").hits == before + 1
        plain = client.run(**request, limits={"memory_mib": 200})  # type: ignore[arg-type]
        slow = client.run(
            backend="docker",
            language="node",
            code="setTimeout(() => {}, 30000)",
            limits={"wall_time_s": 0.5},
        )
        assert pool(client, "docker/node").hits == before + 2
    assert (hot.status, hot.exit_code, hot.stdout, hot.stderr) == (
        plain.status,
        plain.exit_code,
        plain.stdout,
        plain.stderr,
    )
    assert hot.stdout == "[ '/workspace/main.js' ] 1 /workspace true\nin:x\nin:y\n"
    assert (hot.status, hot.exit_code) == ("failed", 4)
    assert slow.status == "timeout"
    assert_no_leftovers(daemon)
