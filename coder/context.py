"""What the agents see: the writer's prompt (task, test digest, relevant files, a map of the
repository, a compact history) and the reviewer's (task, diff, test results). Every part has a
cap, so the prompt stays bounded however many iterations run."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from coder.digest import TestDigest, head_tail
from coder.model import Message

FILES_CHARS = 24_000
FILE_CHARS = 8_000
MAP_CHARS = 3_000
HISTORY_ITEMS = 6
HISTORY_ITEM_CHARS = 400
FEEDBACK_CHARS = 3_000
REVIEW_CHARS = 2_000
DIFF_CHARS = 16_000
GIVE_UP = "GIVE UP"

WRITER_SYSTEM = f"""You fix a repository so that its failing tests pass.
Answer with edit blocks only, in exactly this form, one per change:

path/to/file.py
<<<<<<< SEARCH
exact lines from the file
=======
the lines that replace them
>>>>>>> REPLACE

Rules: SEARCH must copy existing lines exactly (enough of them to be unique); an empty SEARCH
creates a new file. Change the code, never the tests. Keep changes minimal and general: do not
special-case the tests' inputs or hard-code their expected values. If you cannot fix it, answer
"{GIVE_UP}" and why."""

REVIEWER_SYSTEM = """You review a change that made a repository's tests pass.
The test run is the verdict on correctness; you guard against cheating and bad changes:
hard-coded expected values, special cases for test inputs, deleted or weakened assertions,
unrelated changes, security problems.
Answer APPROVE on the first line if the change is a genuine, general fix. Otherwise answer
REVISE on the first line, then concrete points the writer must address."""


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


def writer_messages(
    task: str,
    digest: TestDigest,
    files: dict[str, str],
    history: list[Attempt],
    feedback: str | None,
    review: str | None,
) -> list[Message]:
    parts = [f"# Task\n{task}", f"# Test results (latest run)\n{digest.text}"]
    if history:
        shown = history[-HISTORY_ITEMS:]
        elided = len(history) - len(shown)
        lines = ([f"({elided} earlier attempts elided)"] if elided else []) + [
            a.line() for a in shown
        ]
        parts.append("# Earlier attempts\n" + "\n".join(lines))
    if feedback:
        parts.append("# Your last edit blocks\n" + head_tail(feedback, FEEDBACK_CHARS))
    if review:
        parts.append("# Reviewer's points (address them)\n" + head_tail(review, REVIEW_CHARS))
    parts.append("# Relevant files\n" + file_sections(relevant_files(digest, files), files))
    parts.append("# Repository map\n" + repo_map(files))
    return [
        {"role": "system", "content": WRITER_SYSTEM},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def reviewer_messages(
    task: str, diff: str, digest: TestDigest, before: TestDigest
) -> list[Message]:
    body = (
        f"# Task\n{task}\n\n# Tests before the change\n{before.short()}\n\n"
        f"# Tests after the change\n{digest.short()}\n\n"
        f"# Diff\n```diff\n{head_tail(diff, DIFF_CHARS)}\n```"
    )
    return [{"role": "system", "content": REVIEWER_SYSTEM}, {"role": "user", "content": body}]


def verdict(text: str) -> tuple[str, str]:
    """('APPROVE' | 'REVISE', points). Anything unclear is a REVISE: it fails closed."""
    first, _, rest = text.strip().partition("\n")
    word = first.strip().strip("*#:. ").upper()
    if word.startswith("APPROVE"):
        return "APPROVE", rest.strip()
    if word.startswith("REVISE"):
        return "REVISE", rest.strip() or "revise (no points given)"
    return "REVISE", f"the review did not start with APPROVE or REVISE:\n{text.strip()}"
