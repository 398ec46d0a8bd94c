"""Choosing among candidates (coder.select), the shared budget pool (coder.budget), the
pipeline built from `[roles]` (coder.pipeline) and each candidate's writer settings."""

from __future__ import annotations

import asyncio

import pytest

from coder.agents.flags import flags
from coder.budget import Budget, Pool
from coder.config import CoderConfig
from coder.errors import BudgetExhausted, UsageError
from coder.model import Usage
from coder.pipeline import DEFAULT_TEMPERATURE, build, writer_stages
from coder.select import Facts, coverage, fingerprint, normalise, rank


def test_python_is_compared_by_its_syntax_tree() -> None:
    a = "def add(a, b):\n    return a + b\n"
    b = "def add(a,b):  # the sum\n\n    return (a + b)\n"
    assert normalise("m.py", a) == normalise("m.py", b)
    assert normalise("m.py", a) != normalise("m.py", a.replace("a + b", "b + a"))
    assert fingerprint({"m.py": a}) == fingerprint({"m.py": b})
    assert fingerprint({"m.py": a}) != fingerprint({"n.py": a})  # the path counts
    assert fingerprint({"m.py": a}) != fingerprint({"m.py": None})  # a deletion is a change


def test_other_files_ignore_whitespace_and_comment_lines() -> None:
    assert normalise("x.cfg", "a = 1\n# note\n\n  b =  2\n") == normalise("x.cfg", "a=1\nb=2")
    assert normalise("x.js", "f(1);\n// why\n") == normalise("x.js", "f( 1 );")
    assert normalise("x.cfg", "a = 1") != normalise("x.cfg", "a = 2")
    # Not Python after all: compared as text, not an error.
    assert normalise("broken.py", "def (:\n  x") == "def(:\nx"


def test_rank_tests_first_then_votes_then_order() -> None:
    facts = [
        Facts(1, green=True, fingerprint="solo"),
        Facts(2, green=True, full_passed=False, full_failing=["t::b"], fingerprint="hack"),
        Facts(3, green=True, full_passed=False, full_failing=["t::b"], fingerprint="hack"),
        Facts(4, green=False, status="gave_up"),
        Facts(5, green=True, fingerprint="pair"),
        Facts(6, green=True, fingerprint="pair"),
    ]
    r = rank(facts)
    assert [(g.fingerprint, g.members) for g in r.groups] == [
        ("pair", [5, 6]),
        ("solo", [1]),
    ]
    assert "regressions: t::b" in r.excluded[2] and r.excluded.keys() == {2, 3, 4}
    assert r.excluded[4] == "not green (gave_up)"
    assert r.votes(5) == 2 and r.votes(1) == 1 and r.votes(2) == 0
    assert coverage(facts) == "5 of 6 candidates green"
    # A tie goes to the lower number (then the reviewer decides, in that order).
    tie = rank([Facts(2, True, fingerprint="b"), Facts(1, True, fingerprint="a")])
    assert [g.first for g in tie.groups] == [1, 2]


def test_the_pool_is_one_ledger_across_candidates() -> None:
    pool = Pool(max_tokens=1000, max_cost_usd=1.0)
    one, two = Budget(pool=pool), Budget(pool=pool)
    held = one.reserve("writer", 300)
    assert held.cap == 700 and pool.reserved_tokens == 1000
    with pytest.raises(BudgetExhausted, match="tokens"):
        two.reserve("writer", 300)  # the call in flight may still spend it all
    one.release(held)
    one.charge("writer", Usage(300, 50, 0.1))
    held = two.reserve("writer", 300)
    assert held.cap == 350  # what the first left
    two.release(held)
    two.charge("writer", Usage(300, 100, 0.1))
    assert one.entry("writer").usage.tokens == 350 and two.entry("writer").usage.tokens == 400
    assert pool.spent.tokens == 750
    with pytest.raises(BudgetExhausted, match="300 prompt tokens; 250 left"):
        one.reserve("writer", 300)  # a prompt that does not fit is never sent


def test_a_loop_waits_for_a_call_in_flight_then_gets_its_room() -> None:
    async def scenario() -> list[str]:
        pool = Pool(max_tokens=1000)
        one, two = Budget(pool=pool), Budget(pool=pool)
        order: list[str] = []
        held = one.reserve("writer", 100)

        async def second() -> None:
            got = await two.hold("writer", 100)
            order.append(f"second cap {got.cap}")
            two.release(got)

        waiting = asyncio.create_task(second())
        await asyncio.sleep(0.01)
        order.append("first ends")
        one.release(held)
        one.charge("writer", Usage(100, 20))
        await asyncio.wait_for(waiting, 5)
        return order

    assert asyncio.run(scenario()) == ["first ends", "second cap 780"]


def test_a_loop_does_not_wait_for_what_a_release_cannot_give() -> None:
    """Refused by what is spent (not by what another call holds), a call fails at once even
    with calls in flight: waiting for them could not make it fit."""

    async def scenario() -> None:
        pool = Pool(max_tokens=1000)
        one, two = Budget(pool=pool), Budget(pool=pool)
        one.charge("writer", Usage(900, 0))
        held = one.reserve("writer", 10)  # in flight, holding the last 100
        with pytest.raises(BudgetExhausted, match="tokens"):
            await asyncio.wait_for(two.hold("writer", 200), 2)  # 200 > the 100 ever left
        one.release(held)

    asyncio.run(scenario())


def test_cost_is_reserved_at_the_models_price_and_a_share_caps_a_role() -> None:
    b = Budget(max_tokens=100_000, max_cost_usd=0.01, shares={"reviewer": 0.1})
    held = b.reserve("writer", 1000, lambda u: u.tokens * 1e-6)
    assert held.cap == 4096 and held.cost_usd == pytest.approx(5096e-6)
    second = b.reserve("writer", 1000, lambda u: u.tokens * 1e-6)
    assert second.cap == 3904  # the cap is what the money left after the first buys
    with pytest.raises(BudgetExhausted, match="cost"):
        b.reserve("writer", 10, lambda u: u.tokens * 1e-6)  # nothing is left to cover it
    b.release(held)
    b.release(second)
    b.charge("reviewer", Usage(900, 100, 0.001))  # a tenth of the cost limit
    with pytest.raises(BudgetExhausted, match=r"reviewer spent its share 0\.1"):
        b.check("reviewer")
    b.check("writer")  # the others go on


def test_the_default_pipeline_is_the_writer_and_the_reviewer() -> None:
    p = build(CoderConfig(model="w", reviewer_model="r"))
    assert [(s.name, s.model, s.when) for s in p.stages] == [
        ("writer", "w", "round"),
        ("reviewer", "r", "green"),
    ]
    assert p.off == ("security",) and not p.shares()


def test_roles_are_ordered_and_merged_over_the_built_ins() -> None:
    cfg = CoderConfig.model_validate(
        {
            "model": "w",
            "roles": {
                "lint": {"kind": "reviewer", "after": "edit", "budget_share": 0.2},
                "security": {"enabled": True, "structured_output": True},
                "reviewer": {"model": "big", "temperature": 0.3},
            },
        }
    )
    p = build(cfg)
    assert [s.name for s in p.stages] == ["writer", "reviewer", "security", "lint"]
    by = {s.name: s for s in p.stages}
    assert by["reviewer"].model == "big" and by["reviewer"].temperature == 0.3
    assert by["security"].can_veto and by["security"].structured and by["security"].model == "w"
    assert not by["reviewer"].can_veto and by["lint"].when == "edit"
    assert p.acting("edit") == [by["lint"]] and p.shares() == {"lint": 0.2}
    assert cfg.models() == {"w", "big"}


@pytest.mark.parametrize(
    ("roles", "message"),
    [
        ({"x": {}}, "a new role needs its kind"),
        ({"writer": {"enabled": False}}, "the writer cannot be turned off"),
        ({"writer": {"on": "every_round"}}, "acts every round"),
    ],
)
def test_a_pipeline_it_cannot_run_is_refused(roles: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        build(CoderConfig.model_validate({"roles": roles}))


def test_each_candidate_gets_its_own_writer_settings() -> None:
    cfg = CoderConfig.model_validate(
        {
            "model": "w",
            "candidates": 3,
            "candidate": [{"model": "other", "temperature": 0.1}, {"seed": 42}],
        }
    )
    stages = writer_stages(cfg, build(cfg))
    assert [(s.model, s.temperature, s.seed) for s in stages] == [
        ("other", 0.1, 1),
        ("w", DEFAULT_TEMPERATURE, 42),
        ("w", DEFAULT_TEMPERATURE, 3),
    ]
    assert "other" in cfg.models()
    seeded = CoderConfig.model_validate(
        {"candidates": 2, "roles": {"writer": {"temperature": 0.4, "seed": 10}}}
    )
    assert [(s.temperature, s.seed) for s in writer_stages(seeded, build(seeded))] == [
        (0.4, 11),
        (0.4, 12),
    ]


def test_the_security_flags_name_what_code_can_recognise() -> None:
    diff = (
        "diff --git a/.github/workflows/ci.yml b/.github/workflows/ci.yml\n"
        "--- a/.github/workflows/ci.yml\n+++ b/.github/workflows/ci.yml\n"
        "@@ -1 +1 @@\n-run: pytest\n+run: true\n"
        "diff --git a/requirements.txt b/requirements.txt\n"
        "--- a/requirements.txt\n+++ b/requirements.txt\n@@ -0,0 +1 @@\n+leftpad==1.0\n"
        "diff --git a/tests/test_m.py b/tests/test_m.py\n"
        "--- a/tests/test_m.py\n+++ b/tests/test_m.py\n@@ -1,2 +1,2 @@\n"
        "-    assert f() == 1\n+@pytest.mark.skip\n"
        "diff --git a/m.py b/m.py\n--- a/m.py\n+++ b/m.py\n@@ -1 +1,4 @@\n"
        "+import subprocess, socket\n+x = eval(data)\n"
        '+API_KEY = "sk-abcdefghijklmnopqrstuvwxyz"\n+return a + b\n'
    )
    found = flags(diff)
    assert found.ci == [".github/workflows/ci.yml"]
    assert found.dependencies == ["requirements.txt"] and found.tests == ["tests/test_m.py"]
    assert found.removed_assertions == 1
    assert set(found.added) == {
        "a process",
        "the network",
        "code evaluation",
        "a skipped test",
        "a possible secret",
    }
    text = found.text()
    assert "- CI files changed: .github/workflows/ci.yml" in text
    assert "- assertions removed: 1" in text
    assert "return a + b" not in text  # a plain line is not flagged
    assert flags("diff --git a/m.py b/m.py\n+    return a + b\n").text() == ""


def test_a_roles_share_is_of_the_solve_not_of_each_candidate() -> None:
    pool = Pool(max_tokens=1000)
    one, two = (Budget(pool=pool, shares={"reviewer": 0.3}) for _ in range(2))
    one.charge("reviewer", Usage(200, 0))
    two.charge("reviewer", Usage(100, 0))  # 300 of the solve's 1000: the share is spent
    for b in (one, two):
        with pytest.raises(BudgetExhausted, match="reviewer spent its share"):
            b.reserve("reviewer", 10)
    assert one.reserve("writer", 10).cap > 0  # other roles go on
