"""The fake backend itself: each status from its script, and RunControl honoured."""

from __future__ import annotations

import asyncio

import pytest

from sandboxd.backends.base import RunControl
from sandboxd.backends.fake import FakeBackend
from sandboxd.errors import BackendUnavailable
from sandboxd.models import FileIn, Limits, RunRequest


@pytest.mark.parametrize(
    ("code", "status", "exit_code"),
    [
        ("print('x')", "ok", 0),
        ("exit 4", "failed", 4),
        ("flood 100", "output_limit", None),
        ("sleep 1", "timeout", None),
        ("status memory_limit", "memory_limit", None),
        ("status killed", "killed", None),
        ("import os", "failed", 2),
    ],
)
async def test_each_status(code: str, status: str, exit_code: int | None) -> None:
    limits = Limits(wall_time_s=0.05, output_bytes=10)
    result = await FakeBackend().run("r1", RunRequest(code=code, limits=limits))
    assert (result.status, result.exit_code, result.backend) == (status, exit_code, "fake")


async def test_output_stdin_files_and_the_record() -> None:
    fake = FakeBackend()
    chunks: list[tuple[str, bytes]] = []
    req = RunRequest(
        command=["sh", "s.txt"],
        files=[FileIn(path="s.txt", content="echo_stdin\nstderr([1, 2])")],
        stdin="in",
        collect=["*.txt"],
    )
    result = await fake.run(
        "r2", req, control=RunControl(on_output=lambda s, b: chunks.append((s, b)))
    )
    assert (result.stdout, result.stderr) == ("in", "[1, 2]\n")
    assert chunks == [("stdout", b"in"), ("stderr", b"[1, 2]\n")]
    assert [f.path for f in result.files] == ["s.txt"]
    assert [(c.run_id, c.request) for c in fake.calls] == [("r2", req)]


async def test_cancel_and_refusal() -> None:
    control = RunControl()
    task = asyncio.create_task(
        FakeBackend().run("r3", RunRequest(code="sleep 30"), control=control)
    )
    await asyncio.sleep(0.01)
    control.cancel.set()
    result = await asyncio.wait_for(task, 5)
    assert result.status == "cancelled"
    with pytest.raises(BackendUnavailable):
        await FakeBackend().run("r4", RunRequest(code="raise backend_unavailable"))
