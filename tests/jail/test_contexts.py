"""Interpreter contexts: a Jupyter kernel in a sandbox whose state survives between
executions, within the sandbox's limits, tenant-scoped, and reached only over sockets the
daemon holds (a sandbox that swaps them for symlinks changes nothing)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import stat
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest

from sandboxd.client import Client, SyncClient
from sandboxd.errors import Conflict, InvalidRequest, NotFound
from sandboxd.models import ExecutionResult
from sandboxd.testing import leftover_cgroups, sandbox_processes
from tests.daemon import Daemon

pytestmark = pytest.mark.usefixtures("no_leftovers")


@pytest.fixture
def sandbox(client: SyncClient) -> Iterator[str]:
    sandbox_id = client.create_sandbox(language="python", limits={"disk_mib": 32}).id
    yield sandbox_id
    with contextlib.suppress(NotFound):
        client.delete_sandbox(sandbox_id)


def test_state_persists_between_executions(client: SyncClient, sandbox: str) -> None:
    ctx = client.create_context(sandbox, cwd="sub", env={"GREETING": "hello"})
    assert ctx.id.startswith("ctx_") and ctx.status == "idle" and ctx.cwd == "sub"
    first = client.execute(
        sandbox,
        ctx.id,
        "import os, math\nx = 41\nnotes = open('notes.txt', 'w')\nnotes.write('one ')\n"
        "print(os.getcwd(), os.environ['GREETING'])",
    )
    assert first.status == "ok", first
    assert first.stdout == "/workspace/sub hello\n"
    # Variables, imports and the open file are still there.
    second = client.execute(
        sandbox, ctx.id, "notes.write('two'); notes.flush(); math.floor(x + 1.5)"
    )
    assert second.status == "ok", second
    assert [(r.mime, r.data, r.is_result) for r in second.results] == [("text/plain", "42", True)]
    assert second.execution_count == first.execution_count + 1  # type: ignore[operator]
    # Files are the sandbox's workspace: the file API and runs see them.
    assert client.get_file(sandbox, "sub/notes.txt") == b"one two"
    run = client.run_in_sandbox(sandbox, code="print(open('sub/notes.txt').read())")
    assert run.status == "ok" and run.stdout == "one two\n"
    failed = client.execute(sandbox, ctx.id, "print('before'); 1/0")
    assert failed.status == "error" and failed.stdout == "before\n"
    assert failed.error is not None and failed.error.name == "ZeroDivisionError"
    assert any("1/0" in line for line in failed.error.traceback)
    assert not any("\x1b" in line for line in failed.error.traceback)
    listed = client.list_contexts(sandbox)
    assert [c.id for c in listed] == [ctx.id]
    assert client.get_context(sandbox, ctx.id).execution_count == failed.execution_count
    client.delete_context(sandbox, ctx.id)
    with pytest.raises(NotFound):
        client.execute(sandbox, ctx.id, "x")
    assert client.list_contexts(sandbox) == []
