"""Choosing among candidates, deterministically and with a reason for each.

The order (after Agentless's: tests first, then agreement): a candidate is eligible when its
target tests pass (the solve's test command) and the full suite passes too (no regressions;
`full_test`, by default the same command). Eligible candidates are grouped by their change,
normalised: a Python file by its syntax tree (formatting, comments and parentheses do not
count), any other file by its non-comment lines with whitespace removed. Groups are ranked by
their size (the vote), then by their first candidate's number; the reviewer then checks each
group's first candidate in that order and must approve the chosen one (coder.candidates).
Nothing here calls a model or a sandbox."""

from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import dataclass, field

_COMMENT_PREFIXES = ("#", "//", "--", ";")


def normalise(path: str, text: str) -> str:
    """`text` as far as its meaning goes: Python's syntax tree, else its code lines without
    whitespace or whole-line comments."""
    if path.endswith(".py"):
        try:
            return ast.dump(ast.parse(text), include_attributes=False)
        except (SyntaxError, ValueError):
            pass  # not Python after all: compared as text
    lines = []
    for line in text.splitlines():
        bare = "".join(line.split())
        if bare and not bare.startswith(_COMMENT_PREFIXES):
            lines.append(bare)
    return "\n".join(lines)


def fingerprint(changed: dict[str, str | None]) -> str:
    """One digest of a change: each changed file's path and normalised content (None: the
    file was deleted)."""
    parts = [
        [path, None if text is None else normalise(path, text)]
        for path, text in sorted(changed.items())
    ]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


@dataclass
class Facts:
    """What selection knows of one candidate."""

    index: int
    #: Its target tests pass (the loop ended green).
    green: bool
    #: The full suite passed on it (None: not run, as the candidate is not green).
    full_passed: bool | None = None
    #: The full suite's failing tests, when it failed.
    full_failing: list[str] = field(default_factory=list)
    fingerprint: str = ""
    status: str = ""


@dataclass
class Group:
    """Eligible candidates with the same normalised change, in candidate order."""

    fingerprint: str
    members: list[int]

    @property
    def votes(self) -> int:
        return len(self.members)

    @property
    def first(self) -> int:
        return self.members[0]


@dataclass
class Ranking:
    #: Eligible groups, best first.
    groups: list[Group]
    #: Why each ineligible candidate was left out, by candidate number.
    excluded: dict[int, str]

    def votes(self, index: int) -> int:
        for g in self.groups:
            if index in g.members:
                return g.votes
        return 0


def rank(facts: list[Facts]) -> Ranking:
    excluded: dict[int, str] = {}
    groups: dict[str, Group] = {}
    for f in sorted(facts, key=lambda x: x.index):
        if not f.green:
            excluded[f.index] = f"not green ({f.status or 'its tests do not pass'})"
        elif f.full_passed is False:
            failing = ", ".join(f.full_failing[:5]) or "it fails"
            excluded[f.index] = f"the full suite fails (regressions: {failing})"
        else:
            groups.setdefault(f.fingerprint, Group(f.fingerprint, [])).members.append(f.index)
    ordered = sorted(groups.values(), key=lambda g: (-g.votes, g.first))
    return Ranking(ordered, excluded)


def coverage(facts: list[Facts]) -> str:
    green = sum(f.green for f in facts)
    return f"{green} of {len(facts)} candidates green"
