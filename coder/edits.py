"""SEARCH/REPLACE edit blocks: parsed from plain text, applied leniently, failures explained.

    path/to/file.py
    <<<<<<< SEARCH
    exact lines to find
    =======
    replacement lines
    >>>>>>> REPLACE

An empty SEARCH creates a new file. A block that does not match is reported with the closest
lines the file has ("did you mean these lines?"), so the writer can correct it.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

SEARCH, DIVIDER, REPLACE = "<<<<<<< SEARCH", "=======", ">>>>>>> REPLACE"
TEST_PATTERNS = (
    re.compile(r"(^|/)tests?/"),
    re.compile(r"(^|/)test_[^/]*\.py$"),
    re.compile(r"(^|/)[^/]*_test\.(py|go|js|ts)$"),
    re.compile(r"(^|/)conftest\.py$"),
    re.compile(r"(^|/)__tests__/"),
    re.compile(r"\.(spec|test)\.(js|ts|jsx|tsx|mjs|cjs)$"),
)


@dataclass
class EditBlock:
    path: str
    search: str
    replace: str


@dataclass
class ParseResult:
    blocks: list[EditBlock] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass
class ApplyReport:
    applied: list[str] = field(default_factory=list)  # "path (block N)"
    failed: list[str] = field(default_factory=list)  # explanations for the writer
    refused: list[str] = field(default_factory=list)  # test files, bad paths
    changed: dict[str, str] = field(default_factory=dict)  # path -> new content

    def feedback(self) -> str:
        lines = [f"applied: {a}" for a in self.applied]
        lines += [f"NOT applied: {f}" for f in self.failed]
        lines += [f"REFUSED: {r}" for r in self.refused]
        return "\n".join(lines)


def is_test_path(path: str) -> bool:
    return any(p.search(path) for p in TEST_PATTERNS)


def safe_path(raw: str) -> str | None:
    raw = raw.strip().strip("`").strip()
    if not raw or raw.startswith("/") or "\x00" in raw:
        return None
    parts = [p for p in PurePosixPath(raw).parts if p not in (".", "")]
    if not parts or ".." in parts or parts[0] == ".git":
        return None
    return "/".join(parts)


def parse_blocks(text: str) -> ParseResult:
    """Every well-formed block in `text`; malformed ones become errors, never exceptions."""
    out = ParseResult()
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() != SEARCH:
            i += 1
            continue
        path_line = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        path = path_line.strip().strip("`").strip()
        if path.startswith("```"):
            path = ""
        try:
            mid = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == DIVIDER)
            end = next(j for j in range(mid + 1, len(lines)) if lines[j].strip() == REPLACE)
        except StopIteration:
            out.errors.append(
                f"block after line {i + 1} is not closed with {DIVIDER} and {REPLACE}"
            )
            break
        nested = [j for j in range(i + 1, mid) if lines[j].strip() == SEARCH]
        if nested:
            out.errors.append(f"block at line {i + 1} has no {DIVIDER} before the next {SEARCH}")
            i = nested[0]
            continue
        if not path:
            out.errors.append(f"block at line {i + 1} does not name its file on the line above")
        else:
            search = "\n".join(lines[i + 1 : mid])
            replace = "\n".join(lines[mid + 1 : end])
            out.blocks.append(EditBlock(path, search, replace))
        i = end + 1
    return out


def _norm(line: str) -> str:
    return " ".join(line.split())


def _find(content_lines: list[str], search_lines: list[str]) -> tuple[int, int] | None:
    """Where `search_lines` stand in the file: exactly, else ignoring trailing whitespace,
    else ignoring all whitespace differences inside lines."""
    n = len(search_lines)
    for key in (lambda s: s, str.rstrip, _norm):
        wanted = [key(s) for s in search_lines]
        have = [key(c) for c in content_lines]
        for start in range(len(have) - n + 1):
            if have[start : start + n] == wanted:
                return start, start + n
    return None


def _closest(content_lines: list[str], search_lines: list[str]) -> str:
    n = max(1, len(search_lines))
    best, best_at = 0.0, 0
    target = "\n".join(_norm(s) for s in search_lines)
    for start in range(max(1, len(content_lines) - n + 1)):
        window = "\n".join(_norm(c) for c in content_lines[start : start + n])
        ratio = difflib.SequenceMatcher(None, target, window).ratio()
        if ratio > best:
            best, best_at = ratio, start
    if best < 0.5:
        return ""
    snippet = "\n".join(content_lines[best_at : best_at + n])
    return f" Did you mean these lines (from line {best_at + 1})?\n{snippet}"


def _reindent(replace_lines: list[str], file_first: str, search_first: str) -> list[str]:
    """Shift the replacement by the indentation difference the lenient match forgave."""
    have = len(file_first) - len(file_first.lstrip())
    said = len(search_first) - len(search_first.lstrip())
    if have == said:
        return replace_lines
    if have > said:
        return [(" " * (have - said) + r) if r.strip() else r for r in replace_lines]
    cut = said - have
    return [r[cut:] if r[:cut].strip() == "" else r.lstrip() for r in replace_lines]


def apply_blocks(
    blocks: list[EditBlock], files: dict[str, str], *, allow_test_edits: bool = False
) -> ApplyReport:
    """Apply blocks to `files` (path -> content) in order; the new contents are in `changed`."""
    report = ApplyReport()
    current = dict(files)
    for n, block in enumerate(blocks, 1):
        label = f"{block.path} (block {n})"
        path = safe_path(block.path)
        if path is None:
            report.refused.append(f"{label}: not a relative path inside the repository")
            continue
        if is_test_path(path) and not allow_test_edits:
            report.refused.append(f"{label}: editing tests is not allowed; fix the code instead")
            continue
        if not block.search.strip():
            if path in current and current[path].strip():
                report.failed.append(f"{label}: an empty SEARCH creates a file, but {path} exists")
                continue
            current[path] = block.replace + ("\n" if block.replace else "")
            report.applied.append(label)
            continue
        if path not in current:
            report.failed.append(f"{label}: there is no file {path}")
            continue
        lines = current[path].split("\n")
        search_lines = block.search.split("\n")
        found = _find(lines, search_lines)
        if found is None:
            report.failed.append(f"{label}: SEARCH lines not found.{_closest(lines, search_lines)}")
            continue
        start, end = found
        replace_lines = block.replace.split("\n") if block.replace else []
        replace_lines = _reindent(replace_lines, lines[start], search_lines[0])
        current[path] = "\n".join(lines[:start] + replace_lines + lines[end:])
        report.applied.append(label)
    report.changed = {p: c for p, c in current.items() if files.get(p) != c}
    return report


def unified_diff(before: dict[str, str], after: dict[str, str]) -> str:
    """A `git apply`-able unified diff from `before` to `after` (text files)."""
    chunks: list[str] = []
    for path in sorted(set(before) | set(after)):
        old, new = before.get(path), after.get(path)
        if old == new:
            continue
        a = (old or "").splitlines(keepends=True)
        b = (new or "").splitlines(keepends=True)
        for lines in (a, b):
            if lines and not lines[-1].endswith("\n"):
                lines[-1] += "\n\\ No newline at end of file\n"
        fromfile = f"a/{path}" if old is not None else "/dev/null"
        tofile = f"b/{path}" if new is not None else "/dev/null"
        chunks.append(f"diff --git a/{path} b/{path}\n")
        if old is None:
            chunks.append("new file mode 100644\n")
        chunks.extend(difflib.unified_diff(a, b, fromfile, tofile))
    return "".join(chunks)
