"""A timeout or a cancel stops the whole tree at once: nothing runs after the kill begins.

Killing a tree one pid at a time lets a parent act on its child's death (bash prints the
line after its `sleep`, Python runs a `finally` after `subprocess.run` returns). The daemon
freezes the run's cgroup, kills every process in it, and only then thaws it.
"""

from __future__ import annotations

import pytest

from tests.conftest import BACKENDS, BackendClient, assert_no_leftovers
from tests.daemon import Daemon
from tests.jail.test_streaming import cancel_after_first_output

FINALLY = (
    "import subprocess\n"
    "try:\n"
    "    subprocess.run(['sleep', '8'])\n"
    "finally:\n"
    "    print('end', flush=True)\n"
)


def test_a_timeout_leaves_no_finally_and_no_exit_status(
    backend_client: BackendClient, daemon: Daemon
) -> None:
    result = backend_client.run(language="python", code=FINALLY, limits={"wall_time_s": 1})
    assert result.status == "timeout", result
    assert "end" not in result.stdout
    assert result.exit_code != 0
    assert_no_leftovers(daemon)


#: A parent woken by the first child's death writes at once: killing one pid at a time gives
#: it the time of the other kills to do so (on the old code, about one run in six did).
RACE = (
    "import os, subprocess\n"
    "kids = [subprocess.Popen(['sleep', '8']) for _ in range(50)]\n"
    "print('up', flush=True)\n"
    "os.wait()\n"
    "os.write(1, b'end\\n')\n"
)


def test_no_process_acts_on_another_ones_kill(backend_client: BackendClient) -> None:
    started = 0
    for _ in range(8):
        result = backend_client.run(
            language="python", code=RACE, limits={"wall_time_s": 2, "pids": 100}
        )
        assert result.status == "timeout", result
        assert "end" not in result.stdout, result
        started += result.stdout == "up\n"
    assert started >= 4, "the children were rarely all started before the timeout"


def test_a_timeout_stops_a_shell_between_its_commands(backend_client: BackendClient) -> None:
    result = backend_client.run(
        language="bash", code="echo start; sleep 8; echo end", limits={"wall_time_s": 1}
    )
    assert result.status == "timeout", result
    assert result.stdout == "start\n"


def test_a_cpu_limit_kill_is_atomic_too(backend_client: BackendClient) -> None:
    # The child burns the cpu; its parent would print once it died.
    code = "import subprocess\ntry:\n    subprocess.run(['bash', '-c', 'while :; do :; done'])\n"
    code += "finally:\n    print('end', flush=True)\n"
    result = backend_client.run(
        language="python", code=code, limits={"cpu_time_s": 1, "wall_time_s": 20}
    )
    assert result.status == "cpu_limit", result
    assert "end" not in result.stdout


@pytest.mark.parametrize("backend", BACKENDS)
def test_cancel_stops_a_shell_between_its_commands(daemon: Daemon, backend: str) -> None:
    cancelled, events = cancel_after_first_output(
        daemon, language="bash", code="echo start; sleep 8; echo end", backend=backend
    )
    assert cancelled.status == "cancelled"
    assert cancelled.stdout == "start\n"
    assert "end" not in "".join(e.data or "" for e in events if e.event == "stdout")
