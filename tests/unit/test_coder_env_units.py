"""coder's environment parts, pure: upload batches under the daemon's caps, which first test
runs are environment errors (not bugs), and the setup recipe derived from a repository."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from coder.preflight import classify, tail
from coder.sandbox import MAX_BATCH_BYTES, Caps, batches, wire_size
from sandboxd.models import MAX_FILES, Info


def info(**fields: object) -> Info:
    limits = {"wall_time_s": 10, "cpu_time_s": 10, "memory_mib": 64, "pids": 8, "disk_mib": 8}
    base = {
        "version": "x",
        "backend": "nsjail",
        "backend_version": "x",
        "default_limits": limits,
        "max_limits": limits,
        "max_concurrent_runs": 1,
        "max_queued_runs": 1,
        "max_request_bytes": 32 << 20,
        "active_runs": 0,
        "queued_runs": 0,
        "capabilities": {
            "languages": ["bash"],
            "network_modes": ["none"],
            "cgroup_version": 2,
            "limits_enforced": [],
            "seccomp": True,
        },
        **fields,
    }
    return Info.model_validate(base)


def test_batches_stay_under_the_file_cap() -> None:
    files = {f"f{i:04d}.txt": b"x" for i in range(2500)}
    sizes = [len(b) for b in batches(files, set(), Caps())]
    assert sizes == [MAX_FILES, MAX_FILES, 500]


def test_batches_stay_under_the_byte_cap_and_keep_every_file() -> None:
    files = {f"big{i}": bytes(300_000) for i in range(40)} | {"x.sh": b"#!/bin/sh\n"}
    caps = Caps(max_files=1000, max_bytes=1 << 20)
    got = list(batches(files, {"x.sh"}, caps))
    for batch in got:
        assert sum(wire_size(f.path, f.data()) for f in batch) <= caps.max_bytes
        # the request body that carries it is under the cap too
        assert len(json.dumps([f.model_dump() for f in batch])) <= caps.max_bytes
    flat = [f for b in got for f in b]
    assert sorted(f.path for f in flat) == sorted(files)
    assert [f.executable for f in flat if f.path == "x.sh"] == [True]


def test_caps_follow_the_daemon() -> None:
    assert Caps.from_info(None) == Caps(MAX_FILES, MAX_BATCH_BYTES)
    small = Caps.from_info(info(max_request_bytes=2 << 20))
    assert small.max_bytes < 2 << 20 and small.max_files == MAX_FILES
    assert Caps.from_info(info()).max_bytes == MAX_BATCH_BYTES
    assert Caps.from_info(info(max_files_per_request=10)).max_files == 10


# -- preflight: real pytest and unittest runs, classified -----------------------------------

PYTHONS = [sys.executable] + [
    p
    for p in ("/usr/bin/python3",)  # the sandbox's Python: Debian's pytest
    if Path(p).exists()
    and subprocess.run([p, "-c", "import pytest"], capture_output=True, timeout=60).returncode == 0
]


def run_in(root: Path, files: dict[str, str], argv: list[str]) -> tuple[int, str]:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    proc = subprocess.run(
        argv, cwd=root, capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin"}
    )
    return proc.returncode, proc.stdout + proc.stderr


TEST_OK = "def test_x():\n    assert 1\n"
ENVIRONMENT_ERRORS = {
    "missing module": ({"test_a.py": "import nosuchmod\n" + TEST_OK}, "No module named"),
    "missing plugin": (
        {"pytest.ini": "[pytest]\naddopts = --no-such-plugin-option\n", "test_b.py": TEST_OK},
        "unrecognized arguments",
    ),
    "conftest": ({"conftest.py": "import nosuchmod\n", "test_e.py": TEST_OK}, "nosuchmod"),
    "no tests": ({"test_none.py": "x = 1\n"}, "collected no tests"),
    "wrong version": (
        {"test_v.py": "from json import no_such_name\n" + TEST_OK},
        "cannot import name",
    ),
}
CODE_ERRORS = {
    "failing test": {"test_f.py": "def test_x():\n    assert 0\n"},
    "syntax error in the code": {"calc.py": "def f(:\n", "test_c.py": "from calc import f\n"},
    "a name the code lacks": {"calc.py": "x = 1\n", "test_d.py": "from calc import f\n"},
}


@pytest.mark.parametrize("python", PYTHONS)
@pytest.mark.parametrize("case", sorted(ENVIRONMENT_ERRORS))
def test_environment_errors_are_setup_failures(tmp_path: Path, python: str, case: str) -> None:
    files, quoted = ENVIRONMENT_ERRORS[case]
    code, output = run_in(tmp_path, files, [python, "-m", "pytest", "-q", "-p", "no:cacheprovider"])
    found = classify("pytest -q", code, "failed", output, root=f"{tmp_path}/")
    assert found is not None, output
    assert quoted in found.line() or quoted in found.reason, (found, output)


@pytest.mark.parametrize("python", PYTHONS)
@pytest.mark.parametrize("case", sorted(CODE_ERRORS))
def test_errors_of_the_code_go_to_the_writer(tmp_path: Path, python: str, case: str) -> None:
    code, output = run_in(
        tmp_path, CODE_ERRORS[case], [python, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    )
    assert code in (1, 2), output
    assert classify("pytest -q", code, "failed", output, root=f"{tmp_path}/") is None, output


def test_unittest_import_failures_are_setup_failures(tmp_path: Path) -> None:
    files = {"test_u.py": "import nosuchmod\nimport unittest\n"}
    code, output = run_in(tmp_path, files, [sys.executable, "-m", "unittest"])
    found = classify("python -m unittest", code, "failed", output, root=f"{tmp_path}/")
    assert found is not None and "No module named 'nosuchmod'" in found.line(), output


def test_only_pytest_exit_statuses_count_for_pytest() -> None:
    # `make test` exits 2 on any failure: not pytest's "interrupted"
    assert classify("make test", 2, "failed", "make: *** [test] Error 1\n") is None
    assert classify("pytest", 2, "wall_time", "") is None  # a timeout is the loop's to judge


def test_hostile_output_is_made_printable() -> None:
    assert tail("ok\x1b[31m red\x1b]0;title\x07\x00 end\n") == "ok red]0;title end"
    out = "E   ModuleNotFoundError: No module named '\x1b[2J" + "x" * 5000 + "'\n"
    found = classify("pytest", 2, "failed", "_____ ERROR collecting t.py _____\n" + out)
    assert found is not None and "\x1b" not in found.line() and len(found.line()) < 400
