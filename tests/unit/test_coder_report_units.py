"""coder's solve reporting is best-effort: a daemon that refuses or is gone is named once on
stderr and the solve goes on (the end-to-end report is in tests/coder/test_coder_report.py)."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from coder.config import CoderConfig
from coder.report import SolveReporter
from sandboxd.client import Client
from sandboxd.testing import free_port

END = {"result": {"status": "fixed", "iterations": 1, "writer": {"calls": 1}}}


async def feed(reporter: SolveReporter) -> None:
    reporter("tests.run", {"iteration": 0, "passed": False, "failing": ["t::a"]})
    reporter("model.request", {"iteration": 1, "agent": "writer"})
    reporter("edits.applied", {"iteration": 1, "applied": ["a (block 1)"], "files": ["a.py"]})
    reporter("solve.end", END)
    await reporter.close()


@pytest.mark.asyncio
async def test_a_daemon_without_solves_is_named_once(capsys: pytest.CaptureFixture[str]) -> None:
    server = TestServer(web.Application())  # answers 404 (not JSON) to everything
    await server.start_server()
    try:
        reporter = SolveReporter(CoderConfig(), "ab" * 16)
        async with Client(str(server.make_url("")), token="t") as client:
            reporter.attach(client)
            await feed(reporter)
    finally:
        await server.close()
    err = capsys.readouterr().err
    assert err.count("[report] not reporting this solve") == 1, err
    assert "the solve goes on" in err


@pytest.mark.asyncio
async def test_an_unreachable_daemon_is_named_once(capsys: pytest.CaptureFixture[str]) -> None:
    reporter = SolveReporter(CoderConfig(), "ab" * 16)
    async with Client(f"http://127.0.0.1:{free_port()}", token="t") as client:
        reporter.attach(client)
        await feed(reporter)
        reporter("tests.run", {"iteration": 2, "passed": True})  # after failing: ignored
    assert capsys.readouterr().err.count("cannot reach sandboxd") == 1


def test_trace_events_become_wire_events() -> None:
    reporter = SolveReporter(CoderConfig(model="w", reviewer_model="r"), "ab" * 16)
    reporter.patch = lambda: "--- a/x\n+++ b/x\n"
    assert reporter.spec.models == {"writer": "w", "reviewer": "r"}
    reporter("tests.run", {"iteration": 0, "passed": False, "failing": ["x" * 999]})
    reporter("model.request", {"iteration": 1, "agent": "writer"})
    reporter("model.reply", {"agent": "writer", "model": "w", "usage": {"prompt_tokens": 7}})
    reporter("edits.applied", {"iteration": 1, "applied": [], "failed": ["b"], "files": []})
    reporter("tests.run", {"iteration": 1, "passed": True, "failing": []})
    reporter("review.verdict", {"iteration": 1, "verdict": "REVISE", "points": "- one\n\n- two"})
    reporter("solve.end", END)
    kinds = [e.kind for e in reporter._pending]
    assert kinds == ["tests", "model", "edits", "tests", "review", "end"]
    review = reporter._pending[4]
    assert review.kind == "review" and review.points == ["one", "two"]
    first, model, edits, second = reporter._pending[:4]
    assert first.kind == "tests" and first.patch is None and len(first.failing[0]) == 256
    assert model.kind == "model" and model.round == 1 and model.usage.prompt_tokens == 7
    assert edits.kind == "edits" and edits.not_applied == 1
    assert second.kind == "tests" and second.patch == "--- a/x\n+++ b/x\n"
