"""Digest a test run for the model: exit code, failing test ids, their tracebacks, the summary.

Never the raw log: sandbox paths and timings are stripped (they only add noise and make
prompts differ between identical runs), and the text keeps its head and tail under a cap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_CHARS = 6000
PER_FAILURE_CHARS = 1500
_TIMING = re.compile(r"\s+in\s+\d+(?:\.\d+)?s(?:\s+\(\d+:\d+:\d+\))?")
_WORKSPACE = re.compile(r"/workspace/")
_PYTEST_FAILED = re.compile(r"^(FAILED|ERROR) (\S+?(?:::\S+?|\.py))(?: - .*)?$", re.MULTILINE)
_PYTEST_SUMMARY = re.compile(
    r"^=*\s*((?:\d+ (?:failed|passed|errors?|skipped|xfailed|xpassed|warnings?|deselected)"
    r"(?:, )?)+)",
    re.MULTILINE,
)
_UNITTEST_FAILED = re.compile(r"^(FAIL|ERROR): (\S+) \(([^)]+)\)", re.MULTILINE)
_SECTION = re.compile(r"^_{3,} (.+?) _{3,}$", re.MULTILINE)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class TestDigest:
    exit_code: int | None
    status: str
    failing: list[str] = field(default_factory=list)
    summary: str = ""
    text: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "ok" and self.exit_code == 0

    def short(self) -> str:
        """One line for the history of earlier attempts."""
        if self.passed:
            return f"tests pass ({self.summary or 'exit 0'})"
        ids = ", ".join(self.failing[:5]) + (" …" if len(self.failing) > 5 else "")
        return f"tests fail: {self.summary or f'exit {self.exit_code}'}; failing: {ids or '?'}"


def clean(text: str) -> str:
    text = _ANSI.sub("", text)
    text = _WORKSPACE.sub("", text)
    return _TIMING.sub("", text)


def head_tail(text: str, cap: int) -> str:
    if len(text) <= cap:
        return text
    half = cap // 2
    return f"{text[:half]}\n[… {len(text) - cap} characters elided …]\n{text[-half:]}"


def _failure_sections(text: str) -> list[str]:
    start = text.find("= FAILURES =")
    if start == -1:
        start = text.find("= ERRORS =")
    if start == -1:
        return []
    end = text.find("short test summary info", start)
    body = text[start : end if end != -1 else len(text)]
    marks = list(_SECTION.finditer(body))
    sections = []
    for i, m in enumerate(marks):
        stop = marks[i + 1].start() if i + 1 < len(marks) else len(body)
        section = body[m.start() : stop].rstrip().rstrip("=").rstrip()
        sections.append(head_tail(section, PER_FAILURE_CHARS))
    return sections


def digest(exit_code: int | None, status: str, stdout: str, stderr: str) -> TestDigest:
    """Turn a test command's output into what the writer needs to see."""
    out = clean(stdout + ("\n" + stderr if stderr.strip() else ""))
    failing = [m.group(2) for m in _PYTEST_FAILED.finditer(out)]
    for m in _UNITTEST_FAILED.finditer(out):
        name, where = m.group(2), m.group(3)
        failing.append(where if where.endswith("." + name) else f"{where}.{name}")
    failing = list(dict.fromkeys(failing))
    summaries = _PYTEST_SUMMARY.findall(out)
    summary = summaries[-1].strip().rstrip(",") if summaries else ""
    ran = re.search(r"^(Ran \d+ tests?).*?\n\n(OK|FAILED.*)$", out, re.MULTILINE | re.DOTALL)
    if not summary and ran:
        summary = f"{ran.group(1)}: {ran.group(2)}"
    sections = _failure_sections(out)
    body = "\n\n".join(sections) if sections else out.strip()
    header = [
        f"exit code: {exit_code}"
        + (f" (sandbox status: {status})" if status not in ("ok", "failed") else "")
    ]
    if failing:
        header.append("failing tests: " + ", ".join(failing[:30]))
    if summary:
        header.append(f"summary: {summary}")
    text = "\n".join(header) + "\n\n" + head_tail(body, MAX_CHARS - 200)
    return TestDigest(exit_code, status, failing, summary, text)
