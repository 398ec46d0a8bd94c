"""The backends share one classification of a run's end (`host.reporting.classify`): every
ending worded once, for nsjail and Docker alike. (That host imports no backend, and that no
backend and its warm pool import each other, is `test_import_graph.py`'s.)
"""

from __future__ import annotations

import pytest

from sandboxd.backends.host.reporting import CANCELLED, classify
from sandboxd.backends.host.supervise import KillReason
from sandboxd.models import Limits

LIMITS = Limits(wall_time_s=3, cpu_time_s=2, memory_mib=128, output_bytes=1000)


@pytest.mark.parametrize(
    ("killed_for", "exit_code", "signal", "oom", "oom_kills", "expected"),
    [
        ("cancelled", None, "SIGKILL", False, None, ("cancelled", CANCELLED)),
        ("timeout", None, "SIGKILL", True, 1, ("timeout", "wall time limit of 3.0s reached")),
        (
            "output_limit",
            None,
            "SIGKILL",
            False,
            None,
            ("output_limit", "output over 1000 bytes on a stream; run killed"),
        ),
        (
            "cpu_limit",
            None,
            "SIGKILL",
            False,
            None,
            ("cpu_limit", "cpu time limit of 2.0s reached"),
        ),
        (None, None, "SIGXCPU", False, None, ("cpu_limit", "cpu time limit of 2.0s reached")),
        (
            None,
            None,
            "SIGKILL",
            True,
            3,
            ("memory_limit", "memory limit of 128 MiB reached (3 processes killed)"),
        ),
        (None, 137, None, True, None, ("memory_limit", "memory limit of 128 MiB reached")),
        (None, 0, None, True, 1, ("ok", None)),
        (None, 0, None, False, None, ("ok", None)),
        (None, 3, None, False, None, ("failed", None)),
        (None, None, "SIGSEGV", False, None, ("killed", None)),
        (None, None, None, False, None, None),
    ],
)
def test_classify_words_every_ending_once(
    killed_for: KillReason | None,
    exit_code: int | None,
    signal: str | None,
    oom: bool,
    oom_kills: int | None,
    expected: tuple[str, str | None] | None,
) -> None:
    got = classify(
        killed_for,
        LIMITS,
        exit_code=exit_code,
        signal=signal,
        oom=oom,
        oom_kills=oom_kills,
    )
    assert got == expected
