"""The writer's requests for more of the repository, and coder's answers to them.

Why: however well `coder.focus` guesses, a writer sometimes needs a file, a line range or a
definition it was not shown, and guessing its lines instead makes edits that do not apply.
So the writer may put, anywhere in its answer, a fenced block of requests:

    ```requests
    READ path/to/file.py              (a whole file; a long one as its outline)
    READ path/to/file.py:120-180      (lines 120 to 180)
    GREP some literal text            (where it occurs: path:line: text)
    DEFINITION name                   (a function, Class, Class.method or pkg.mod.name)
    ```

coder answers from its own copy of the repository (the files it uploaded, with the writer's
applied edits) before the next writer turn. Everything is bounded: `MAX_PER_TURN` requests a
turn, `ANSWER_CHARS` per answer and `TURN_CHARS` per turn, GREP a literal string (no regex, so
no pathological patterns) with at most `GREP_HITS` hits and `GREP_SECONDS` of searching.
Paths are the repository's relative paths: no `..`, no absolute paths, and links are never
followed because the copy holds regular files only (`coder.repo` skips links)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from coder.edits import safe_path
from coder.regions import class_header, region_view
from coder.symbols import SymbolIndex

FENCE = "requests"
VERBS = ("READ", "GREP", "DEFINITION")
MAX_PER_TURN = 4
ANSWER_CHARS = 6_000
TURN_CHARS = 12_000
GREP_HITS = 40
GREP_SECONDS = 2.0
GREP_CHARS = 200  # longest GREP string, and longest line of a hit shown
_BLOCK = re.compile(r"^```[ \t]*" + FENCE + r"[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_RANGE = re.compile(r"^(.+?)(?::|\s+)(\d+)\s*-\s*(\d+)$")


@dataclass(frozen=True)
class Request:
    verb: str
    arg: str

    def line(self) -> str:
        return f"{self.verb} {self.arg}"


@dataclass
class Parsed:
    requests: list[Request] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def parse_requests(text: str) -> Parsed:
    """The requests in `text`'s ```requests blocks; bad lines become errors, not raises."""
    out = Parsed()
    for block in _BLOCK.finditer(text):
        for raw in block.group(1).splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            verb, _, arg = line.partition(" ")
            if verb.upper() not in VERBS or not arg.strip():
                out.errors.append(f"not a request: {line[:100]!r} (use {', '.join(VERBS)})")
                continue
            out.requests.append(Request(verb.upper(), arg.strip()))
    if len(out.requests) > MAX_PER_TURN:
        dropped = out.requests[MAX_PER_TURN:]
        out.requests = out.requests[:MAX_PER_TURN]
        out.errors.append(
            f"only {MAX_PER_TURN} requests are answered per turn; not answered: "
            + "; ".join(r.line() for r in dropped)
        )
    return out


def _fit(text: str, cap: int) -> str:
    """`text` cut at a line boundary under `cap`, saying where it was cut."""
    if len(text) <= cap:
        return text
    cut = text[: max(0, cap - 80)].rsplit("\n", 1)[0]
    return f"{cut}\n[… cut: the answer is capped at {cap} characters; ask for less]"


class Lookup:
    """Answers requests from `files` (path -> text, the solve's current copy)."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files
        self.index = SymbolIndex(files)

    def answer(self, requests: list[Request], errors: list[str] | None = None) -> str:
        """The answers to `requests` (and the `errors` of the lines that were not requests)
        as one section of the next prompt, within `TURN_CHARS`."""
        parts: list[str] = []
        used = 0
        for req in requests:
            cap = min(ANSWER_CHARS, TURN_CHARS - used)
            if cap < 200:
                parts.append(f"## {req.line()}\n[not answered: this turn's answers are full]")
                continue
            body = _fit(self.one(req, cap), cap)
            used += len(body)
            parts.append(f"## {req.line()}\n{body}")
        parts += [f"## refused\n{e}" for e in errors or []]
        return "\n\n".join(parts)

    def one(self, req: Request, cap: int) -> str:
        if req.verb == "READ":
            return self.read(req.arg, cap)
        if req.verb == "GREP":
            return self.grep(req.arg)
        return self.definition(req.arg, cap)

    def _path(self, raw: str) -> tuple[str | None, str]:
        path = safe_path(raw)
        if path is None:
            return None, f"refused: {raw[:100]!r} is not a relative path inside the repository"
        if path not in self.files:
            return None, f"there is no text file {path} in the repository (see its map)"
        return path, ""

    def read(self, arg: str, cap: int) -> str:
        m = _RANGE.match(arg)
        raw, span = (m.group(1), (int(m.group(2)), int(m.group(3)))) if m else (arg, None)
        path, why = self._path(raw)
        if path is None:
            return why
        text = self.files[path]
        lines = text.split("\n")
        if span is None:
            if len(text) <= cap - 100:
                return f"{path} (whole, {len(lines)} lines):\n```\n{text}\n```"
            return region_view(self.index, path, [], cap) or f"{path} is too long; READ a range"
        start, end = max(1, span[0]), min(len(lines), span[1])
        if start > end:
            return f"{path} has {len(lines)} lines; lines {span[0]}-{span[1]} are not in it"
        shown, size = start, 0
        while shown <= end and size + len(lines[shown - 1]) + 1 <= cap - 200:
            size += len(lines[shown - 1]) + 1
            shown += 1
        last = max(start, shown - 1)
        body = "\n".join(lines[start - 1 : last])
        more = f"\n[cut at line {last}: READ {path}:{last + 1}-{end} for the rest]"
        return f"{path} lines {start}-{last}:\n```\n{body}\n```" + (more if last < end else "")

    def grep(self, needle: str) -> str:
        if len(needle) > GREP_CHARS:
            return f"refused: GREP takes at most {GREP_CHARS} characters"
        deadline = time.monotonic() + GREP_SECONDS
        hits: list[str] = []
        more = 0
        for path in sorted(self.files):
            if time.monotonic() > deadline:
                hits.append(f"[search stopped after {GREP_SECONDS:.0f}s; be more specific]")
                break
            text = self.files[path]
            if needle not in text:
                continue
            for n, line in enumerate(text.split("\n"), 1):
                if needle in line:
                    if len(hits) < GREP_HITS:
                        hits.append(f"{path}:{n}: {line.strip()[:GREP_CHARS]}")
                    else:
                        more += 1
        if not hits:
            return f"no line of the repository contains {needle!r} (GREP is a literal match)"
        return "\n".join(hits) + (f"\n[… {more} more hits not shown]" if more else "")

    def definition(self, name: str, cap: int) -> str:
        found = self.index.named(name)
        if not found:
            return f"no definition named {name!r} in the repository's Python files"
        parts: list[str] = []
        for d in found:
            lines = self.files[d.path].split("\n")
            end = d.end
            if d.kind == "class":
                end = class_header(self.index, d.path, d.qualname, d.start, d.end)
            body = "\n".join(lines[d.start - 1 : end])
            note = ""
            if end < d.end:
                note = f"\n[methods of {d.qualname}: DEFINITION {d.qualname}.NAME]"
            parts.append(f"{d.path} lines {d.start}-{end} ({d.qualname}):\n```\n{body}\n```{note}")
        return _fit("\n\n".join(parts), cap)
