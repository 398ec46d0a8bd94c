"""A long file shown as the regions that matter plus an outline of the rest.

Why not a head and a tail: in real projects the buggy function sits anywhere in a module of
tens of thousands of characters, and a blind cut at both ends shows it in a minority of cases
(the first trial of coder on PyPI projects: in 9 of 41). The regions are given by the caller
(`coder.focus`: traceback frames, what the failing tests call; `coder.lookup`: a READ of a line
range), best first, each with its line numbers in a header outside the code, so the code lines
stay exact for SEARCH blocks. What does not fit is named in the outline (def/class lines with
their numbers), which the writer can READ next."""

from __future__ import annotations

from coder.symbols import SymbolIndex

OUTLINE_CHARS = 2_000
CLASS_CHARS = 1_500  # a class longer than this is shown as its header; its methods on their own


def _size(lines: list[str], start: int, end: int) -> int:
    return sum(len(x) + 1 for x in lines[start - 1 : end])


def class_header(index: SymbolIndex, path: str, qualname: str, start: int, end: int) -> int:
    """The last line of a long class's header (up to its first method); `end` if short."""
    lines = index.files[path].split("\n")
    if _size(lines, start, end) <= CLASS_CHARS:
        return end
    methods = [
        d.start
        for q, d in index.module(path).defs.items()
        if q.startswith(qualname + ".") and q.count(".") == qualname.count(".") + 1
    ]
    return max(start, min(methods, default=end + 1) - 1)


def merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def outline(index: SymbolIndex, path: str, shown: list[tuple[int, int]], cap: int) -> str:
    """The def/class lines of `path` outside `shown`, as `  line: text`, under `cap`; when
    they do not all fit, those nearest the shown regions (top-level ones first)."""
    lines = index.files[path].split("\n")
    entries: list[tuple[int, str]] = []
    for d in index.module(path).every:
        if any(s <= d.start <= e for s, e in shown):
            continue
        at = next(
            (
                n
                for n in range(d.start, min(d.end, d.start + 20) + 1)
                if lines[n - 1].lstrip().startswith(("def ", "async def ", "class "))
            ),
            d.start,
        )
        entries.append((at, f"{at:>6}: {lines[at - 1].rstrip()[:120]}"))
    if sum(len(e) + 1 for _, e in entries) > cap:

        def distance(entry: tuple[int, str]) -> tuple[bool, int]:
            at, text = entry
            near = min((min(abs(at - s), abs(at - e)) for s, e in shown), default=at)
            return text[8:].startswith(" "), near

        kept: list[tuple[int, str]] = []
        used = 60
        for entry in sorted(entries, key=distance):
            if used + len(entry[1]) + 1 > cap:
                continue
            kept.append(entry)
            used += len(entry[1]) + 1
        left = len(entries) - len(kept)
        entries = [*sorted(kept), (0, f"[… {left} more definitions: READ a range to see them]")]
    return "\n".join(e for _, e in entries)


def region_view(
    index: SymbolIndex, path: str, wanted: list[tuple[int, int]], cap: int
) -> str | None:
    """`path` as the `wanted` line spans (best first; those that fit `cap`) and an outline of
    the rest; None when not even the header and outline fit."""
    text = index.files[path]
    lines = text.split("\n")
    header = (
        f"{path}: {len(lines)} lines, {len(text)} characters, too long to show whole. "
        "Shown: the parts that matter (line numbers in the headers, not in the code), "
        "then an outline of the rest (READ any range of it)."
    )
    budget = cap - len(header) - 200
    outline_cap = min(OUTLINE_CHARS, max(0, budget // 3))
    chosen: list[tuple[int, int]] = []
    used = 0
    for start, end in wanted:
        start, end = max(1, start), min(len(lines), end)
        if start > end or any(s <= start and end <= e for s, e in chosen):
            continue
        size = _size(lines, start, end) + 40
        if used + size > budget - outline_cap:
            # a single region larger than the whole budget: its first lines only
            if chosen or size < budget // 2:
                continue
            while end > start and _size(lines, start, end) + 40 > budget - outline_cap:
                end = start + (end - start) // 2
            size = _size(lines, start, end) + 40
        chosen.append((start, end))
        used += size
    parts = [header]
    for start, end in merge(chosen):
        body = "\n".join(lines[start - 1 : end])
        parts.append(f"{path} lines {start}-{end}:\n```\n{body}\n```")
    rest = outline(index, path, merge(chosen), max(0, min(OUTLINE_CHARS, cap - used - 400)))
    if rest:
        parts.append(f"outline of the rest of {path} (line: definition):\n```\n{rest}\n```")
    view = "\n".join(parts)
    return view if len(view) <= cap else None
