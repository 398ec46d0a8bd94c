"""What the security reviewer is pointed at: facts read from a diff by code, not verdicts.

The model judges (a new subprocess call may be the fix the task asks for); code only makes
sure that nothing it can recognise goes unmentioned, however long the diff: changes to CI
files, to dependency declarations and to tests, added lines that start processes, open the
network or evaluate code, removed assertions and added skips, and what looks like a secret.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_CI = re.compile(
    r"^(\.github/|\.gitlab-ci\.yml$|\.circleci/|\.travis\.yml$|Jenkinsfile$|azure-pipelines"
    r"\.yml$|\.buildkite/|Makefile$|tox\.ini$|noxfile\.py$|\.pre-commit-config\.yaml$)"
)
_DEPS = re.compile(
    r"(^|/)(requirements[\w.-]*\.txt|pyproject\.toml|setup\.py|setup\.cfg|Pipfile(\.lock)?|"
    r"poetry\.lock|uv\.lock|package(-lock)?\.json|yarn\.lock|pnpm-lock\.yaml|go\.(mod|sum)|"
    r"Cargo\.(toml|lock)|Gemfile(\.lock)?)$"
)
_TESTS = re.compile(r"(^|/)(tests?/|test_[^/]*\.py$|[^/]*_test\.py$|conftest\.py$)")
#: (what it is, a pattern an added line matches).
_ADDED: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a process", re.compile(r"\bsubprocess\b|\bos\.(system|popen|exec\w*|spawn\w*)\b|\bpty\.")),
    ("the network", re.compile(r"\b(socket|urllib|http\.client|requests|httpx|aiohttp|ftplib)\b")),
    ("code evaluation", re.compile(r"\b(eval|exec|compile|__import__)\s*\(|\bpickle\.loads?\b")),
    ("a skipped test", re.compile(r"\b(pytest\.mark\.(skip|xfail)|unittest\.skip|pytest\.skip)\b")),
    (
        "a possible secret",
        re.compile(
            r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY|\bgh[pousr]_[A-Za-z0-9]{20,}|"
            r"(?i:(api_?key|secret|token|password)\s*[=:]\s*['\"][^'\"]{12,}['\"])"
        ),
    ),
)
_ASSERT = re.compile(r"^\s*(assert\b|self\.assert\w*\(|pytest\.raises\()")
MAX_LINES = 5


@dataclass
class Flags:
    ci: list[str] = field(default_factory=list)
    dependencies: list[str] = field(default_factory=list)
    tests: list[str] = field(default_factory=list)
    #: What added lines do, with the lines (at most MAX_LINES each).
    added: dict[str, list[str]] = field(default_factory=dict)
    removed_assertions: int = 0

    def text(self) -> str:
        """The flags as lines for the prompt; empty when there are none."""
        lines = []
        for what, paths in (
            ("CI files changed", self.ci),
            ("dependency declarations changed", self.dependencies),
            ("tests changed", self.tests),
        ):
            if paths:
                lines.append(f"- {what}: {', '.join(paths)}")
        if self.removed_assertions:
            lines.append(f"- assertions removed: {self.removed_assertions}")
        for what, found in self.added.items():
            shown = "; ".join(x.strip()[:120] for x in found[:MAX_LINES])
            lines.append(f"- added lines that touch {what}: {shown}")
        return "\n".join(lines)


def flags(diff: str) -> Flags:
    found = Flags()
    path = ""
    for line in diff.splitlines():
        if line.startswith("diff --git a/"):
            path = line.rsplit(" b/", 1)[-1]
            for pattern, bucket in ((_CI, found.ci), (_DEPS, found.dependencies)):
                if pattern.search(path):
                    bucket.append(path)
            if _TESTS.search(path):
                found.tests.append(path)
            continue
        if line.startswith(("+++", "---")):
            continue
        if line.startswith("-") and _ASSERT.match(line[1:]):
            found.removed_assertions += 1
        elif line.startswith("+"):
            for what, pattern in _ADDED:
                if pattern.search(line[1:]):
                    found.added.setdefault(what, []).append(line[1:])
    return found
