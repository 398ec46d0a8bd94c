"""Preflight: is the first test run a failure of the code, or of the environment?

Why: a test command that cannot even collect (a module the environment lacks, a pytest option
whose plugin is missing, no tests found) is no bug for the writer to fix. Sent to the writer,
it burns the budget, or gets "fixed" by deleting the import. So the first run is classified
before the loop starts, and an environment error stops the solve with `setup_failed`, naming
what failed, its exit status and the tail of its output.

What counts (README "coder"):
- pytest's own exit statuses 3 (internal error), 4 (usage error, e.g. `unrecognized
  arguments: --cov`, or a conftest that fails to import) and 5 (no tests collected);
- pytest's 2 (interrupted) with no test run, unless every collection error it reports is an
  error of the repository's own code (a SyntaxError, or an ImportError of a name from a file
  of the repository): the writer can fix those;
- at any exit status, a test module that fails to import (pytest's `ERROR collecting`,
  unittest's `Failed to import test module`) with `ModuleNotFoundError`, or an `ImportError`
  that names no file of the repository (a dependency of the wrong version).
A run that timed out or hit a limit is none of these: it stays the loop's to judge.

Only the first run is judged so: once the writer edits, a broken import is its own doing and
goes back to it as feedback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from coder.digest import clean

TAIL_CHARS = 3000
DETAIL_CHARS = 300  # of the error quoted in the one-line reason
WORKSPACE = "/workspace/"
_PYTEST_SIGNS = re.compile(
    r"^=+ (?:test session starts|ERRORS|FAILURES|short test summary info|.*\bin \d)"
    r"|^(?:ERROR: usage:|INTERNALERROR>|no tests ran|ERROR: file or directory not found)"
    r"|^\S+\.py:\d+: in |^ImportError while (?:importing test module|loading conftest)"
    r"|^Interrupted: \d+ errors? during collection",
    re.MULTILINE,
)
_PYTEST_SECTION = re.compile(r"^_{3,} ERROR collecting (.+?) _{3,}$", re.MULTILINE)
_UNITTEST_SECTION = re.compile(r"^ImportError: Failed to import test module: (\S+)$", re.M)
_CONFTEST_SECTION = re.compile(r"^ImportError while loading conftest '(.+?)'\.$", re.M)
_SECTION_END = re.compile(r"^(?:_{3,} |={3,}|-{10,}$)", re.MULTILINE)
_ERROR_LINE = re.compile(r"^(?:E\s+)?([A-Za-z_][\w.]*(?:Error|Exception)): ?(.*)$", re.M)
_RAN_TESTS = re.compile(r"\b\d+ (?:passed|failed|xfailed|xpassed)\b|^Ran [1-9]", re.M)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

_PYTEST_EXITS = {
    3: "pytest had an internal error",
    4: "pytest refused its command line or configuration",
    5: "pytest collected no tests",
}


@dataclass
class EnvFailure:
    """Why a first test run is an environment error: one line, and the error it quotes."""

    reason: str
    detail: str = ""

    def line(self) -> str:
        detail = (
            self.detail if len(self.detail) <= DETAIL_CHARS else self.detail[:DETAIL_CHARS] + "…"
        )
        return f"{self.reason}: {detail}" if detail else self.reason


def printable(text: str) -> str:
    """Untrusted output made safe to print on a terminal: no ANSI sequences, no control
    characters but \\n and \\t."""
    return _CONTROL.sub("", _ANSI.sub("", text))


def tail(text: str, chars: int = TAIL_CHARS) -> str:
    """The end of an output, printable, sandbox paths and timings stripped as for the writer."""
    text = printable(clean(text)).rstrip()
    return text if len(text) <= chars else "…" + text[-chars:]


def looks_like_pytest(command: str, output: str) -> bool:
    return "pytest" in command or _PYTEST_SIGNS.search(output) is not None


def _sections(output: str) -> list[tuple[str, str]]:
    """Each test module that failed to import: (its name, the text of its error)."""
    found = []
    for pattern in (_PYTEST_SECTION, _UNITTEST_SECTION, _CONFTEST_SECTION):
        for m in pattern.finditer(output):
            end = _SECTION_END.search(output, m.end() + 1)
            found.append((m.group(1), output[m.end() : end.start() if end else len(output)]))
    return found


def _errors(section: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2).strip()) for m in _ERROR_LINE.finditer(section)]


def _environmental(kind: str, message: str, root: str) -> bool:
    """An import failure the environment causes, not the repository's code."""
    if kind.endswith("ModuleNotFoundError"):
        return True
    if kind.endswith("ImportError") and not message.startswith("Failed to import test module"):
        return root not in message
    return False


def _last_line(output: str, pattern: str) -> str:
    lines = [x.strip() for x in output.splitlines() if re.search(pattern, x)]
    return lines[-1] if lines else ""


def classify(
    command: str, exit_code: int | None, status: str, output: str, root: str = WORKSPACE
) -> EnvFailure | None:
    """The environment error that the first run of `command` in `root` shows, or None (a
    failure of the code, or success)."""
    if status not in ("ok", "failed") or exit_code in (0, None):
        return None
    text = printable(output)
    sections = _sections(text)
    for name, body in sections:
        for kind, message in _errors(body):
            if _environmental(kind, message, root):
                return EnvFailure(
                    f"{name.removeprefix(root)} does not import",
                    f"{kind.rsplit('.', 1)[-1]}: {message}",
                )
    if not looks_like_pytest(command, text):
        return None
    if exit_code in _PYTEST_EXITS:
        detail = _last_line(text, r"error:|Error|INTERNALERROR|no tests ran")
        return EnvFailure(_PYTEST_EXITS[exit_code], detail)
    if exit_code == 2 and not _RAN_TESTS.search(text):
        if sections and all(_errors(body) for _, body in sections):
            return None  # every module that fails to import fails in the repository's code
        detail = _last_line(text, r"Error|error")
        return EnvFailure("pytest was interrupted before any test ran", detail)
    return None
