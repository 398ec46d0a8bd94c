"""What of the repository the writer is shown: the files a test digest points at (and the
modules they import), a map of the rest, and a compact history of attempts. Every part has a
cap, so the prompt (coder.agents.writer) stays bounded however many iterations run."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from coder.digest import TestDigest, head_tail

FILES_CHARS = 24_000
FILE_CHARS = 8_000
MAP_CHARS = 3_000
HISTORY_ITEM_CHARS = 400


@dataclass
class Attempt:
    iteration: int
    edited: list[str]
    outcome: str

    def line(self) -> str:
        files = ", ".join(self.edited) or "nothing applied"
        return head_tail(
            f"attempt {self.iteration}: edited {files}; {self.outcome}", HISTORY_ITEM_CHARS
        )


def mentioned_files(text: str, files: dict[str, str]) -> list[str]:
    """Repository files named in `text` (tracebacks, test ids), in order of first mention."""
    found: dict[str, int] = {}
    for path in files:
        for m in re.finditer(re.escape(path) + r"(?![\w/])", text):
            found.setdefault(path, m.start())
    return sorted(found, key=lambda p: found[p])


def imported_files(path: str, files: dict[str, str]) -> list[str]:
    """Repository modules a Python file imports."""
    try:
        tree = ast.parse(files[path])
    except (SyntaxError, ValueError):
        return []
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    out = []
    for name in names:
        base = name.replace(".", "/")
        for candidate in (f"{base}.py", f"{base}/__init__.py", f"src/{base}.py"):
            if candidate in files and candidate not in out:
                out.append(candidate)
    return out


def relevant_files(digest: TestDigest, files: dict[str, str]) -> list[str]:
    named = mentioned_files(digest.text, files)
    for test_id in digest.failing:
        path = test_id.split("::")[0]
        if path in files and path not in named:
            named.append(path)
    for path in list(named):
        named += [p for p in imported_files(path, files) if p not in named]
    return named


def repo_map(files: dict[str, str], cap: int = MAP_CHARS) -> str:
    lines = []
    for path in sorted(files):
        symbols: list[str] = []
        if path.endswith(".py"):
            try:
                tree = ast.parse(files[path])
                symbols = [
                    n.name
                    for n in tree.body
                    if isinstance(n, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)
                ]
            except (SyntaxError, ValueError):
                pass
        lines.append(f"{path}: {', '.join(symbols)}" if symbols else path)
    text = "\n".join(lines)
    return text if len(text) <= cap else text[:cap] + "\n[… map cut …]"


def file_sections(paths: list[str], files: dict[str, str], cap: int = FILES_CHARS) -> str:
    out, used = [], 0
    for path in paths:
        body = head_tail(files[path], FILE_CHARS)
        if used + len(body) > cap:
            out.append(f"[{path} left out: the prompt's file budget is spent]")
            continue
        used += len(body)
        out.append(f"{path}\n```\n{body}\n```")
    return "\n\n".join(out)
