"""What of the repository the writer is shown: the files a test digest points at, the
definitions its failing tests call (`coder.focus`), the modules they import, a map of the
rest, and a compact history of attempts. Every part has a cap, so the prompt
(coder.agents.writer) stays bounded however many iterations run.

A file that fits its cap is shown whole; a longer one (or one that no longer fits what is left
of the budget) as the regions that matter and an outline of the rest (`coder.regions`), never
a blind head and tail: the bug is rarely at either end of a long module."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from coder.digest import TestDigest, head_tail
from coder.focus import Focus, focus
from coder.regions import class_header, region_view
from coder.symbols import SymbolIndex, parse

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
        if not self.edited and self.outcome.startswith("asked"):  # a turn of requests only
            return head_tail(f"attempt {self.iteration}: {self.outcome}", HISTORY_ITEM_CHARS)
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
    tree = parse(files[path])
    if tree is None:
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


def relevant_files(
    digest: TestDigest, files: dict[str, str], found: list[Focus] | None = None
) -> list[str]:
    """The files to show, in order: those holding the best-ranked definitions (traceback
    frames and what the failing assertions call), the files the digest names, the files of
    the other definitions found, then what the named files import."""
    found = focus(digest, files) if found is None else found
    first = [f.definition.path for f in found if f.rank <= 1]
    named = mentioned_files(digest.text, files)
    for test_id in digest.failing:
        path = test_id.split("::")[0]
        if path in files and path not in named:
            named.append(path)
    called = [f.definition.path for f in found if f.rank > 1]
    imported: list[str] = []
    for path in named:
        imported += [p for p in imported_files(path, files) if p not in imported]
    return list(dict.fromkeys(first + named + called + imported))


def repo_map(files: dict[str, str], cap: int = MAP_CHARS) -> str:
    lines = []
    for path in sorted(files):
        symbols: list[str] = []
        tree = parse(files[path]) if path.endswith(".py") else None
        if tree is not None:
            symbols = [
                n.name
                for n in tree.body
                if isinstance(n, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)
            ]
        lines.append(f"{path}: {', '.join(symbols)}" if symbols else path)
    text = "\n".join(lines)
    return text if len(text) <= cap else text[:cap] + "\n[… map cut …]"


def spans(found: list[Focus], index: SymbolIndex) -> dict[str, list[tuple[int, int]]]:
    """The line spans that matter, per file, best first (a long class: its header only)."""
    out: dict[str, list[tuple[int, int]]] = {}
    for f in found:
        d = f.definition
        end = d.end
        if d.kind == "class":
            end = class_header(index, d.path, d.qualname, d.start, d.end)
        out.setdefault(d.path, []).append((d.start, end))
    return out


def file_sections(
    paths: list[str],
    files: dict[str, str],
    found: list[Focus] | None = None,
    cap: int = FILES_CHARS,
) -> str:
    """`paths` whole while they fit, else as their regions and an outline, within `cap`."""
    index = SymbolIndex(files)
    wanted = spans(found or [], index)
    out, used = [], 0
    for path in paths:
        body = files[path]
        if len(body) <= FILE_CHARS and used + len(body) <= cap:
            used += len(body)
            out.append(f"{path}\n```\n{body}\n```")
            continue
        regions = wanted.get(path) or ([] if path.endswith(".py") else [(1, body.count("\n") + 1)])
        view = region_view(index, path, regions, min(FILE_CHARS, cap - used))
        if view is None:
            out.append(f"[{path} left out: the prompt's file budget is spent]")
            continue
        used += len(view)
        out.append(view)
    return "\n\n".join(out)
