"""The key of a prepared environment (coder.envs): what changes it and what does not, and
the stale-file pass a fork runs, on a directory of this host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from coder.envs import CURRENT, MANIFEST, PRUNE_STALE, age_s, env_key, read_by_recipe
from coder.recipe import Step
from sandboxd.models import Snapshot

FILES = {
    "pyproject.toml": "[project]\nname = 'x'\n",
    "requirements-test.txt": "pytest\n",
    "src/x/__init__.py": "",
    "tests/test_x.py": "def test(): pass\n",
    ".coder/setup.sh": "echo hi\n",
}
STEPS = [Step(".coder/setup.sh", "bash .coder/setup.sh", True)]


def key(
    python: str = "3.11",
    repo: str = "x",
    files: dict[str, str] = FILES,
    steps: list[Step] = STEPS,
    sources: tuple[str, ...] = ("http://index.test/simple/",),
) -> str:
    return env_key(python, repo, files, steps, list(sources))


def test_the_key_holds_what_the_environment_depends_on() -> None:
    assert set(read_by_recipe(FILES)) == {
        "pyproject.toml",
        "requirements-test.txt",
        ".coder/setup.sh",
    }
    base = key()
    assert key() == base and len(base) == 32
    assert key(files={**FILES, "src/x/__init__.py": "x = 1\n", "new.py": ""}) == base
    assert key(files={**FILES, ".coder/setup.sh": "echo other\n"}) != base
    assert key(files={**FILES, "requirements-test.txt": "pytest\nhypothesis\n"}) != base
    assert key(files={**FILES, "tox.ini": "[testenv]\n"}) != base
    assert key(python="3.12") != base
    assert key(repo="y") != base
    assert key(sources=("http://index.test:8081/simple/",)) != base
    assert key(steps=[Step("setup", "make env", True)]) != base


def test_age() -> None:
    now = datetime.now(UTC)
    snap = Snapshot(
        id="snap_1",
        sandbox_id="sbx_1",
        tenant="t",
        size_bytes=1,
        created_at=now - timedelta(seconds=90),
        labels={},
    )
    assert 89 < age_s(snap, now) < 91


def run_prune(root: Path, current: list[str]) -> None:
    (root / CURRENT).write_text(json.dumps(current))
    subprocess.run(
        [sys.executable, "-c", PRUNE_STALE], cwd=root, check=True, timeout=30, env=dict(os.environ)
    )


def test_the_fork_removes_only_files_the_tree_no_longer_has(tmp_path: Path) -> None:
    (tmp_path / ".coder-venv").mkdir()
    (tmp_path / MANIFEST).write_text(json.dumps(["a.py", "pkg/gone.py", "keep.py"]))
    for name in ("a.py", "pkg/gone.py", "keep.py", "_version.py"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("x")
    run_prune(tmp_path, ["a.py", "keep.py", "new.py"])
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == [".coder-venv/.coder-uploaded.json", "_version.py", "a.py", "keep.py"]
    assert not (tmp_path / "pkg").exists()  # left empty: gone too


def test_without_a_manifest_everything_but_the_venv_goes(tmp_path: Path) -> None:
    (tmp_path / ".coder-venv" / "bin").mkdir(parents=True)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("x")
    (tmp_path / "g").write_text("x")
    run_prune(tmp_path, ["g"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".coder-venv"]
    assert (tmp_path / ".coder-venv" / "bin").is_dir()
