"""The real-repo bench's mechanics that need no download and no daemon: injecting one bug
exactly where its task says, the host check's test command (its `NAME=value` settings), and
the shape of the task table (bench/realrepos_tasks.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bench.realrepos_tasks import PROJECTS, Project, Task, host_suite, inject

MODULE = """def clamp(x, top):
    if x > top:
        return top
    return x


class Box:
    def fits(self, n):
        return n > 0 and n <= 9
"""


def test_a_bug_goes_in_once_inside_its_function(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(MODULE)
    bug = inject(tmp_path, Task("fits", "m.py", "Box.fits", "n <= 9", "n < 9"))
    assert bug.fixed_lines == "        return n > 0 and n <= 9"
    assert bug.buggy_lines == "        return n > 0 and n < 9"
    assert "n < 9" in (tmp_path / "m.py").read_text()
    with pytest.raises(ValueError, match="occurs 0x"):  # `n <= 9` is outside clamp
        inject(tmp_path, Task("x", "m.py", "clamp", "n <= 9", "n < 9"))
    with pytest.raises(ValueError, match="no function"):
        inject(tmp_path, Task("x", "m.py", "Box.missing", "n", "m"))


def test_the_host_check_honours_the_commands_settings(tmp_path: Path) -> None:
    """wcwidth's tests run in its Python mode only with WCWIDTH_PYTHON=1 in the environment."""
    (tmp_path / "test_mode.py").write_text(
        "import os\n\ndef test_mode():\n    assert os.environ.get('MODE_X') == '1'\n"
    )
    python = Path(sys.executable)
    with_setting = Project("p", "1", "MODE_X=1 pytest -q -p no:cacheprovider test_mode.py")
    without = Project("p", "1", "pytest -q -p no:cacheprovider test_mode.py")
    assert host_suite(with_setting, tmp_path, python)
    assert not host_suite(without, tmp_path, python)


def test_the_task_table_is_well_formed() -> None:
    keys = [p.key for p in PROJECTS]
    assert len(keys) == len(set(keys)) and len(PROJECTS) >= 11
    for project in PROJECTS:
        names = [t.name for t in project.tasks]
        assert names and len(names) == len(set(names)), project.key
        assert "pytest" in project.test.split()
        tasks = {t.path for t in project.tasks}
        assert not tasks & set(project.generated), project.key
        for task in project.tasks:
            assert task.old != task.new and task.path.endswith(".py"), task.name
