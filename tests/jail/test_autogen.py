"""`SandboxdCodeExecutor` against a real daemon, driven by AutoGen itself: a real
`CodeExecutorAgent` (autogen-agentchat) whose model is AutoGen's own
`ReplayChatCompletionClient`, and AutoGen's `LocalCommandLineCodeExecutor` as the reference
for what a code result says (exit code, output, timeouts)."""

from __future__ import annotations

import asyncio
import os
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from autogen_agentchat.agents import ApprovalRequest, ApprovalResponse, CodeExecutorAgent
from autogen_agentchat.base import TaskResult
from autogen_agentchat.messages import CodeExecutionEvent, TextMessage
from autogen_core import CancellationToken
from autogen_core.code_executor import CodeBlock, CodeResult
from autogen_ext.code_executors.local import LocalCommandLineCodeExecutor
from autogen_ext.models.replay import ReplayChatCompletionClient

from sandboxd.integrations.autogen import SandboxdCodeExecutor
from tests.conftest import BACKENDS
from tests.daemon import Daemon


def approve(request: ApprovalRequest) -> ApprovalResponse:
    return ApprovalResponse(approved=True, reason="the sandbox holds it")


@pytest.fixture(params=BACKENDS)
async def executor(
    daemon: Daemon, request: pytest.FixtureRequest
) -> AsyncIterator[SandboxdCodeExecutor]:
    """An executor on each backend (a test that takes it runs on both)."""
    backend = request.param
    async with SandboxdCodeExecutor(
        daemon.url, token=daemon.token, timeout=2, backend=backend
    ) as ex:
        yield ex


async def local_result(blocks: list[CodeBlock], work: Path) -> CodeResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "runs code on the local machine": yes
        local = LocalCommandLineCodeExecutor(timeout=2, work_dir=work)
    async with local:
        return await local.execute_code_blocks(blocks, CancellationToken())


async def events(coder: CodeExecutorAgent, task: str) -> list[object]:
    """Everything the agent says while it works (run() keeps only the chat messages)."""
    return [event async for event in coder.run_stream(task=task)]


def agent(executor: SandboxdCodeExecutor, *replies: str) -> CodeExecutorAgent:
    return CodeExecutorAgent(
        "coder",
        code_executor=executor,
        model_client=ReplayChatCompletionClient(list(replies)),
        approval_func=approve,
    )


async def test_an_agent_runs_its_models_code_in_the_sandbox(
    executor: SandboxdCodeExecutor,
) -> None:
    reply = "Let me compute it.\n```python\nimport os\nprint(6 * 7, os.getuid())\n```\n"
    coder = agent(executor, reply, "It is 42.")  # the code, then its reflection on the output
    said = await events(coder, "What is 6 times 7?")
    executions = [m for m in said if isinstance(m, CodeExecutionEvent)]
    assert len(executions) == 1
    ran = executions[0].result
    assert ran.exit_code == 0
    answer, uid = ran.output.split()
    assert answer == "42" and int(uid) != 0  # not root, unlike in a Docker executor's container
    assert int(uid) != os.getuid()
    final = said[-1]
    assert isinstance(final, TaskResult)
    assert isinstance(final.messages[-1], TextMessage) and final.messages[-1].content == "It is 42."
    shown = [m.content for m in await coder.model_context.get_messages()]
    assert ran.output in shown  # the model was shown the sandbox's output


async def test_an_agent_sees_autogens_timeout(daemon: Daemon) -> None:
    reply = "```python\nimport time\nprint('working', flush=True)\ntime.sleep(30)\n```"
    async with SandboxdCodeExecutor(daemon.url, token=daemon.token, timeout=1) as ex:
        said = await events(agent(ex, reply, "It timed out."), "sleep")
    ran = next(m for m in said if isinstance(m, CodeExecutionEvent)).result
    assert ran.exit_code == 124
    # the agent's own words around a failed block's output, as for any of its executors
    assert ran.output == (
        "The script ran, then exited with an error (POSIX exit code: 124)\n"
        "Its output was:\nworking\n\nTimeout"
    )
    final = said[-1]
    assert isinstance(final, TaskResult) and final.messages[-1].to_text() == "It timed out."


CASES: dict[str, list[CodeBlock]] = {
    "ok": [CodeBlock("print('hello')", "python"), CodeBlock("echo from bash", "bash")],
    "stderr then stdout": [
        CodeBlock("import sys\nprint('out')\nprint('err', file=sys.stderr)", "python")
    ],
    "stops at the first failure": [
        CodeBlock("import sys\nprint('first')\nsys.exit(3)", "python"),
        CodeBlock("echo never", "sh"),
    ],
    "a traceback": [CodeBlock("1 / 0", "python")],
    "unknown language": [CodeBlock("DISPLAY 'HI'", "cobol")],
    "filename outside the workspace": [CodeBlock("# filename: ../evil.py\nprint(1)", "python")],
    "timeout": [CodeBlock("import time\nprint('started', flush=True)\ntime.sleep(20)", "python")],
}


@pytest.mark.parametrize("case", list(CASES))
async def test_results_are_those_of_autogens_own_executor(
    executor: SandboxdCodeExecutor, tmp_path: Path, case: str
) -> None:
    blocks = CASES[case]
    ours = await executor.execute_code_blocks(blocks, CancellationToken())
    theirs = await local_result(blocks, tmp_path)
    assert ours.exit_code == theirs.exit_code
    if case == "timeout":
        # AutoGen's local executor drops what a timed-out block printed; its Docker executor
        # keeps it (the container's `timeout` command), and so does sandboxd
        assert theirs.output == "\nTimeout"
        assert ours.output == "started\n\nTimeout"
        return
    # the traceback names the file where it was written: the sandbox's path, not the host's
    assert ours.output.replace("/workspace/", "") == theirs.output.replace(f"{tmp_path}/", "")
    if ours.code_file is not None:
        assert Path(ours.code_file).name == Path(theirs.code_file or "").name  # type: ignore[attr-defined]


async def test_files_persist_between_blocks_and_calls(
    executor: SandboxdCodeExecutor, daemon: Daemon
) -> None:
    write = CodeBlock("# filename: data/notes.py\nopen('kept.txt', 'w').write('kept')", "python")
    first = await executor.execute_code_blocks([write], CancellationToken())
    second = await executor.execute_code_blocks(
        [CodeBlock("cat kept.txt; ls data", "bash")], CancellationToken()
    )
    assert first.exit_code == 0 and first.code_file == "/workspace/data/notes.py"
    assert (second.exit_code, second.output) == (0, "keptnotes.py\n")
    assert executor.sandbox_id is not None
    async with daemon.aclient() as client:
        code = await client.get_file(executor.sandbox_id, "data/notes.py")
    assert code.decode() == write.code


async def test_without_keep_files_each_block_is_a_fresh_sandbox(
    daemon: Daemon, tmp_path: Path
) -> None:
    blocks = CASES["stops at the first failure"]
    async with SandboxdCodeExecutor(daemon.url, token=daemon.token, keep_files=False) as ex:
        assert ex.sandbox_id is None
        wrote = await ex.execute_code_blocks(
            [CodeBlock("open('kept.txt', 'w').write('x')", "python")], CancellationToken()
        )
        looked = await ex.execute_code_blocks([CodeBlock("ls", "sh")], CancellationToken())
        failed = await ex.execute_code_blocks(blocks, CancellationToken())
    assert wrote.exit_code == 0
    assert looked.exit_code == 0 and "kept.txt" not in looked.output
    theirs = await local_result(blocks, tmp_path)
    assert (failed.exit_code, failed.output) == (theirs.exit_code, theirs.output)


async def test_limits_and_network_are_the_sandboxes(daemon: Daemon) -> None:
    hog = CodeBlock("b = bytearray(400 * 1024 * 1024)\nprint('allocated')", "python")
    net = CodeBlock(
        "import socket\ntry:\n    socket.create_connection(('192.0.2.1', 80), timeout=2)\n"
        "except OSError as e:\n    print('no route:', type(e).__name__)",
        "python",
    )
    async with SandboxdCodeExecutor(
        daemon.url, token=daemon.token, timeout=10, limits={"memory_mib": 64}
    ) as ex:
        hogged = await ex.execute_code_blocks([hog], CancellationToken())
        reached = await ex.execute_code_blocks([net], CancellationToken())
    assert (hogged.exit_code, hogged.status) == (122, "memory_limit")  # type: ignore[attr-defined]
    assert "allocated" not in hogged.output
    assert reached.exit_code == 0 and reached.output.startswith("no route:")


async def test_cancelling_the_token_cancels_the_run(executor: SandboxdCodeExecutor) -> None:
    token = CancellationToken()
    block = CodeBlock("import time\nprint('started', flush=True)\ntime.sleep(20)", "python")
    task = asyncio.create_task(executor.execute_code_blocks([block], token))
    await asyncio.sleep(1)
    token.cancel()
    result = await asyncio.wait_for(task, 10)
    assert (result.exit_code, result.output) == (125, "\nCancelled")


async def test_an_executor_not_started_says_so(daemon: Daemon) -> None:
    ex = SandboxdCodeExecutor(daemon.url, token=daemon.token)
    with pytest.raises(ValueError, match="not started"):
        await ex.execute_code_blocks([CodeBlock("print(1)", "python")], CancellationToken())
    with pytest.raises(ValueError, match="Timeout must be"):
        SandboxdCodeExecutor(daemon.url, timeout=0)


async def test_the_executor_is_an_autogen_component(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AutoGen serialises teams with their executors: ours round-trips, without its token (a
    loaded one finds its own, as the CLI does)."""
    ex = SandboxdCodeExecutor(
        daemon.url, token=daemon.token, timeout=7, limits={"memory_mib": 96}, keep_files=False
    )
    dumped = ex.dump_component()
    assert dumped.provider == "sandboxd.integrations.autogen.SandboxdCodeExecutor"
    assert daemon.token not in dumped.model_dump_json()
    monkeypatch.setenv("SANDBOXD_TOKEN", daemon.token)
    loaded = SandboxdCodeExecutor.load_component(dumped)
    assert loaded.timeout == 7 and loaded.dump_component() == dumped
    async with loaded:
        block = CodeBlock("b = bytearray(200 * 1024 * 1024)", "python")
        result = await loaded.execute_code_blocks([block], CancellationToken())
    assert result.exit_code == 122  # the memory limit came with it
