"""The writer's requests (coder.lookup): parsed only from a ```requests block, answered from
coder's copy of the repository, every answer bounded, no path outside the repository."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from coder import repo
from coder.agents.writer import Writer, WriterView
from coder.budget import Budget
from coder.config import load_config
from coder.digest import digest
from coder.errors import UsageError
from coder.lookup import ANSWER_CHARS, MAX_PER_TURN, TURN_CHARS, Lookup, Request, parse_requests

LONG = "\n".join(f"def f{i}(x):\n    return x + {i}\n" for i in range(600))
FILES = {
    "pkg/__init__.py": "from pkg.mod import Thing\n",
    "pkg/mod.py": (
        "class Thing:\n    def go(self):\n        return 1\n\n\ndef helper():\n    pass\n"
    ),
    "long.py": LONG,
    "big_class.py": "class Big:\n    x = 1\n\n"
    + "\n".join(f"    def m{i}(self):\n        return {i} * 1000000\n" for i in range(200)),
}


def ask(*lines: str) -> str:
    return "Let me look.\n```requests\n" + "\n".join(lines) + "\n```\n"


def test_requests_come_from_a_requests_block_only() -> None:
    parsed = parse_requests("READ the file please\n" + ask("read pkg/mod.py", "GREP x", "RM -rf"))
    assert parsed.requests == [Request("READ", "pkg/mod.py"), Request("GREP", "x")]
    assert parsed.errors == ["not a request: 'RM -rf' (use READ, GREP, DEFINITION)"]
    many = parse_requests(ask(*[f"GREP n{i}" for i in range(MAX_PER_TURN + 2)]))
    assert len(many.requests) == MAX_PER_TURN
    assert f"only {MAX_PER_TURN} requests are answered per turn" in many.errors[0]


def test_read_a_file_a_range_and_an_outline() -> None:
    lookup = Lookup(FILES)
    whole = lookup.read("pkg/mod.py", ANSWER_CHARS)
    assert whole.startswith("pkg/mod.py (whole, 8 lines):") and "def helper():" in whole
    part = lookup.read("long.py:4-5", ANSWER_CHARS)
    assert part == "long.py lines 4-5:\n```\ndef f1(x):\n    return x + 1\n```"
    assert lookup.read("long.py 4-5", ANSWER_CHARS) == part
    outline = lookup.read("long.py", ANSWER_CHARS)
    assert "too long to show whole" in outline and "     4: def f1(x):" in outline
    cut = lookup.read("long.py:1-3000", ANSWER_CHARS)
    assert len(cut) <= ANSWER_CHARS and "for the rest]" in cut
    assert "are not in it" in lookup.read("pkg/mod.py:50-60", ANSWER_CHARS)


def test_paths_stay_inside_the_repository(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "a.py").write_text("A = 1\n")
    (tmp_path / "secret.txt").write_text("SECRET\n")
    os.symlink(tmp_path / "secret.txt", root / "link.txt")
    os.symlink(tmp_path, root / "up")
    files = asyncio.run(repo.load(root)).text
    lookup = Lookup(files)
    for raw in ("../secret.txt", "/etc/passwd", "link.txt", "up/secret.txt", "a.py/../../x"):
        answer = lookup.read(raw, ANSWER_CHARS)
        assert "SECRET" not in answer and "root:" not in answer
        assert answer.startswith(("refused:", "there is no text file")), answer
    assert lookup.grep("SECRET").startswith("no line")  # the link target is not in the copy


def test_grep_is_literal_and_bounded() -> None:
    lookup = Lookup({**FILES, "evil.py": "a" * 50_000 + "!\n"})
    started = time.monotonic()
    assert "no line" in lookup.grep("(a+)+$")  # a literal: no catastrophic backtracking
    assert time.monotonic() - started < 1
    hits = lookup.grep("return x +")
    assert hits.startswith("long.py:2: return x + 0") and "more hits not shown" in hits
    assert lookup.grep("x" * 500).startswith("refused:")


def test_definitions_by_name_method_and_dotted_path() -> None:
    lookup = Lookup(FILES)
    assert "pkg/mod.py lines 2-3 (Thing.go):" in lookup.definition("go", ANSWER_CHARS)
    assert "pkg/mod.py lines 6-7 (helper):" in lookup.definition("pkg.mod.helper", ANSWER_CHARS)
    assert "(Thing)" in lookup.definition("pkg.Thing", ANSWER_CHARS)  # through the re-export
    big = lookup.definition("Big", ANSWER_CHARS)
    assert "big_class.py lines 1-3 (Big)" in big and "DEFINITION Big.NAME" in big
    assert "no definition named" in lookup.definition("nothing_here", ANSWER_CHARS)


def test_a_turn_of_answers_is_bounded() -> None:
    answer = Lookup(FILES).answer([Request("READ", "long.py:1-5000")] * MAX_PER_TURN)
    assert len(answer) <= TURN_CHARS + 500
    assert "[not answered: this turn's answers are full]" in answer


def test_the_request_budget_is_one_count_per_solve() -> None:
    b = Budget(max_requests=5)
    assert b.grant_requests("writer", 4) == 4
    assert b.grant_requests("writer", 4) == 1
    assert b.grant_requests("writer", 1) == 0
    assert b.entry("writer").requests == 5


def test_the_request_budget_is_a_setting() -> None:
    assert load_config(None, {}).max_requests == 16
    assert load_config(None, {"max_requests": 0}).max_requests == 0
    with pytest.raises(UsageError, match="bad setting max_requests"):
        load_config(None, {"max_requests": -1})


def test_the_writer_asks_is_taught_and_sees_the_answers() -> None:
    writer = Writer()
    answer = writer.parse(ask("READ pkg/mod.py", "bogus"))
    assert answer.only_asks and not answer.gave_up and answer.request_errors
    both = writer.parse(ask("GREP go") + "m.py\n<<<<<<< SEARCH\na\n=======\nb\n>>>>>>> REPLACE\n")
    assert both.requests and both.blocks and not both.only_asks
    assert not writer.parse("GIVE UP? not yet.\n" + ask("GREP go")).gave_up
    d = digest(1, "failed", "FAILED tests/test_m.py::test_f - assert 0\n", "")
    view = WriterView("task", d, FILES, answers="ANSWERS-MARK")
    system, user = (m["content"] for m in writer.messages(view))
    assert "```requests" in system and "READ path/to/file.py:120-180" in system
    assert "# Answers to your requests" in user and "ANSWERS-MARK" in user
