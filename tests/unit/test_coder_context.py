"""What the writer's first prompt shows (issue 16, part 4): the definitions the failing tests
call, found through any chain of imports, and long files as their regions plus an outline.

Each real-repo fixture (tests/fixtures/repos/) is a task whose buggy lines the first prompt
must hold; all but the examples failed on the old context (one level of imports, head+tail)."""

from __future__ import annotations

import pytest

from coder.context import file_sections, relevant_files
from coder.digest import digest
from coder.focus import focus, frames
from coder.symbols import Definition, ModuleRef, SymbolIndex
from coder.testing.firstprompt import Task, first_prompt, shows_bug, tasks


@pytest.mark.parametrize("task", tasks(), ids=lambda t: t.name)
def test_the_first_prompt_holds_the_buggy_lines(task: Task) -> None:
    prompt = first_prompt(task.root, task.args)
    assert shows_bug(prompt, task), prompt
    assert len(prompt) < 40_000  # within the caps


def filler(n: int) -> str:
    return "\n\n".join(
        f"def filler_{i}(values):\n    total = 0\n    for v in values:\n        total += v * {i}\n"
        "    return total\n"
        for i in range(n)
    )


PKG = {
    "pkg/__init__.py": "from .api import *\nfrom pkg import tools\n",
    "pkg/api.py": "from ..other import nothing\nfrom .impl import run as go\n__all__ = ['go']\n",
    "pkg/impl.py": "def _run(x):\n    return x\n\nrun = _run\n",
    "pkg/tools/__init__.py": "from . import strings\n",
    "pkg/tools/strings.py": "class Upper:\n    def apply(self, s):\n        return s.upper()\n",
    "t.py": "import pkg\n",
    "cyc/a.py": "from cyc.b import f\n",
    "cyc/b.py": "from cyc.a import f\n",
}


def names(targets: list[Definition | ModuleRef]) -> list[str]:
    return [t.qualname if isinstance(t, Definition) else t.path for t in targets]


def test_names_follow_star_relative_and_alias_imports() -> None:
    index = SymbolIndex(PKG)
    assert names(index.resolve("pkg/__init__.py", "go")) == ["run", "_run"]
    assert names(index.resolve_chain("t.py", ["pkg", "go"])) == ["pkg/__init__.py", "run", "_run"]
    chain = index.resolve_chain("pkg/__init__.py", ["tools", "strings", "Upper", "apply"])
    assert names(chain) == [
        "pkg/tools/__init__.py",
        "pkg/tools/strings.py",
        "Upper",
        "Upper.apply",
    ]
    assert index.resolve("cyc/a.py", "f") == []  # a cycle ends, it does not hang
    assert [d.path for d in index.named("apply")] == ["pkg/tools/strings.py"]
    assert (
        index.enclosing("pkg/tools/strings.py", 3)
        == index.module("pkg/tools/strings.py").defs["Upper.apply"]
    )


def test_unittest_ids_and_native_tracebacks_are_understood() -> None:
    files = {
        "lib/core.py": filler(80) + "\n\ndef broken(x):\n    return x / 0\n",
        "tests/test_core.py": (
            "import unittest\nfrom lib.core import broken\n\n\nclass TestCore(unittest.TestCase):\n"
            "    def test_broken(self):\n        self.assertEqual(broken(1), 1)\n"
        ),
    }
    line = files["lib/core.py"].count("\n")
    out = (
        "FAIL: test_broken (tests.test_core.TestCore.test_broken)\n"
        "Traceback (most recent call last):\n"
        f'  File "/workspace/lib/core.py", line {line}, in broken\n'
        "ZeroDivisionError: division by zero\n\nRan 1 test in 0.001s\n\nFAILED (failures=1)\n"
    )
    d = digest(1, "failed", out, "")
    assert frames(d.text, files) == [("lib/core.py", line)]
    found = focus(d, files)
    assert [(f.rank, f.definition.qualname) for f in found][:2] == [
        (0, "broken"),
        (1, "TestCore.test_broken"),
    ]
    shown = file_sections(relevant_files(d, files, found), files, found)
    assert "    return x / 0" in shown.splitlines()
    assert "[… " not in shown.split("outline")[0]  # no blind cut before the outline


def test_a_long_file_is_its_regions_and_an_outline_never_a_head_and_tail() -> None:
    body = filler(150) + "\n\ndef target(x):\n    return x - 1\n\n\n" + filler(150)
    files = {
        "big.py": body,
        "tests/test_big.py": "from big import target\n\n\ndef test_t():\n"
        "    assert target(1) == 2\n",
    }
    d = digest(1, "failed", "FAILED tests/test_big.py::test_t - assert 0 == 2\n", "")
    shown = file_sections(relevant_files(d, files), files, focus(d, files))
    at = body[: body.index("def target")].count("\n") + 1
    assert f"big.py lines {at}-{at + 1}:" in shown
    assert "    return x - 1" in shown
    assert ": def filler_149(values):" in shown  # the outline: the nearest definitions first
    assert "more definitions: READ a range to see them]" in shown
    assert "characters elided" not in shown
    assert len(shown) < 24_000


def test_the_file_budget_holds_with_many_long_files() -> None:
    files = {f"m{i}.py": filler(200) for i in range(20)}
    text = "\n".join(f"m{i}.py:3: in filler_0" for i in range(20))
    d = digest(1, "failed", text, "")
    shown = file_sections(relevant_files(d, files), files, focus(d, files))
    assert len(shown) < 24_000 + 2_000
    assert "left out: the prompt's file budget is spent" in shown


def test_test_class_helpers_and_conftest_fixtures_are_followed() -> None:
    files = {
        "lib/__init__.py": "",
        "lib/ops.py": filler(120) + "\n\ndef double(x):\n    return x * 3\n\n\ndef make():\n"
        "    return 1\n\n\n" + filler(60),
        "tests/conftest.py": (
            "import pytest\n\nfrom lib.ops import make\n\n\n@pytest.fixture\ndef thing():\n"
            "    return make()\n"
        ),
        "tests/test_ops.py": (
            "from lib.ops import double\n\n\nclass TestOps:\n    def check(self, v):\n"
            "        assert double(v) == 2 * v\n\n    def test_double(self, thing):\n"
            "        self.check(thing + 1)\n"
        ),
    }
    out = (
        "FAILED tests/test_ops.py::TestOps::test_double - assert 6 == 4\n"
        "tests/test_ops.py:9: in test_double\n        self.check(thing + 1)\n"
        "tests/test_ops.py:6: AssertionError\n"
    )
    d = digest(1, "failed", out, "")
    found = {f.definition.qualname: f.rank for f in focus(d, files)}
    assert found["TestOps.test_double"] == 1 and found["TestOps.check"] == 1
    assert found["double"] == 1 and found["thing"] == 2 and found["make"] <= 3
    shown = file_sections(relevant_files(d, files, focus(d, files)), files, focus(d, files))
    assert "    return x * 3" in shown.splitlines()


def test_what_a_failing_line_compares_is_traced_back_to_its_call() -> None:
    files = {
        "lib.py": "def noise():\n    return 0\n\n\ndef target(x):\n    return x - 1\n",
        "tests/test_lib.py": (
            "import lib\n\n\ndef test_t():\n    noise = lib.noise()\n    raw = lib.target(noise)\n"
            "    actual = [raw]\n    assert actual == [1]\n"
        ),
    }
    out = "FAILED tests/test_lib.py::test_t\ntests/test_lib.py:8: AssertionError\n"
    d = digest(1, "failed", out, "")
    ranks = {f.definition.qualname: f.rank for f in focus(d, files)}
    assert ranks["target"] == 1 and ranks["noise"] == 1  # both feed `actual`, back 2 steps


def test_a_long_non_python_file_shows_the_lines_a_trace_names() -> None:
    js = "\n".join(f"function f{i}(x) {{ return x + {i}; }}" for i in range(900))
    files = {"src/lib.js": js, "README.md": "x\n" * 9000}
    out = "FAILED at f500 (src/lib.js:501:20)\n  see README.md\n"
    d = digest(1, "failed", out, "")
    shown = file_sections(relevant_files(d, files), files, focus(d, files))
    assert "src/lib.js lines 486-516:" in shown and "function f500(x) { return x + 500; }" in shown
    assert "README.md lines 1-" in shown  # no trace names a line: its first lines, numbered
