"""The backends share one seam: one classification of a run's end, and host mechanics that
never import a backend (so no backend and its warm pool import each other either).

These read the code, not a jail: they run as any user, in the unit tier.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from sandboxd.backends.host.reporting import CANCELLED, classify
from sandboxd.backends.host.supervise import KillReason
from sandboxd.models import Limits

BACKENDS = Path(__file__).resolve().parents[2] / "sandboxd" / "backends"


def _imports(path: Path) -> set[str]:
    """The sandboxd modules `path` imports, TYPE_CHECKING imports included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("sandboxd.")}


def _module(path: Path) -> str:
    parts = path.relative_to(BACKENDS.parents[1]).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_host_imports_no_backend_and_not_the_seam() -> None:
    banned = ("sandboxd.backends.base", "sandboxd.backends.fake")
    banned += ("sandboxd.backends.nsjail", "sandboxd.backends.docker")
    for path in sorted((BACKENDS / "host").glob("*.py")):
        bad = sorted(n for n in _imports(path) if n.startswith(banned))
        assert not bad, f"{path.name} imports {bad}"


def test_no_import_cycle_among_the_backends() -> None:
    modules = {_module(p): p for p in BACKENDS.rglob("*.py")}
    graph = {
        name: {m for m in _imports(path) if m in modules and m != name}
        for name, path in modules.items()
    }

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                if nxt == goal:
                    return True
                seen.add(nxt)
                todo.append(nxt)
        return False

    cycles = sorted((a, b) for a in graph for b in graph[a] if a < b and reaches(b, a))
    assert not cycles, f"import cycles through {cycles}"


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
