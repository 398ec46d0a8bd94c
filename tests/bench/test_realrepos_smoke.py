"""bench/realrepos.py keeps working: one small task end to end (a pinned sdist, one injected
bug, the host-venv check, `coder solve` on a real daemon with the scripted model). Nothing is
timed. The sdist comes from the bench's cache (/var/tmp/coder-realrepos), fetched through the
host's pip once; if the index cannot be reached the test fails saying so, it never skips."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import realrepos
from bench.realrepos_tasks import PROJECTS, FetchFailed, fetch, inject, unpack
from sandboxd.testing import Daemon

PROJECT = next(p for p in PROJECTS if p.name == "toolz")
TASK = next(t for t in PROJECT.tasks if t.name == "take_nth")


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    d = realrepos.start_daemon("realrepos-smoke")
    try:
        yield d
    finally:
        realrepos.stop_daemon(d)


def sdist() -> Path:
    try:
        return fetch(PROJECT)
    except FetchFailed as exc:
        pytest.fail(f"the bench's sdist is not cached and cannot be fetched: {exc}")


def test_injection_is_exact_and_inverse(tmp_path: Path) -> None:
    tree = unpack(sdist(), tmp_path / "t")
    before = (tree / TASK.path).read_text()
    bug = inject(tree, TASK)
    after = (tree / TASK.path).read_text()
    assert after != before and bug.buggy_lines in after and bug.fixed_lines in before
    assert after.replace(bug.buggy_lines, bug.fixed_lines, 1) == before


def test_one_task_end_to_end(daemon: Daemon) -> None:
    """With coder's own recipe plus the build-deps fix (`--patched-recipe`), so the whole loop
    runs: setup through the daemon's egress allowlist, the bug shown, fixed, approved."""
    outcomes = realrepos.measure(daemon, (PROJECT,), TASK.name, patched=True)
    assert len(outcomes) == 1
    (o,) = outcomes
    assert o.status == "fixed", o  # never gave_up: the rule
    assert o.iterations == 1 and o.first_prompt_shows_bug and o.setup_s > 0
    assert "| toolz-1.1.0 | take_nth | fixed |" in realrepos.report(outcomes)
