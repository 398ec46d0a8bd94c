"""AutoGen's HumanEval loop on AutoGen executors: `SandboxdCodeExecutor` vs AutoGen's own
`LocalCommandLineCodeExecutor` (no isolation; the baseline) and `DockerCommandLineCodeExecutor`
(when Docker answers), in one run.

The loop is an agent's: one executor each, started once, then one `execute_code_blocks` per
problem (prompt + canonical solution + its tests), one after another. The contenders are
interleaved problem by problem, so load on the machine falls on all of them alike. Every
problem must pass on every contender (a failure aborts the bench). Figures: the summed time of
the 164 calls per contender, and its ratio against the local executor's.
    python -m bench.autogen_executors [--problems N] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from autogen_core import CancellationToken
from autogen_core.code_executor import CodeBlock, CodeExecutor

from bench.humaneval import programs
from bench.peers import PeerWorker
from sandboxd.integrations.autogen import SandboxdCodeExecutor
from sandboxd.testing import Daemon, docker_problem

JAIL_PYTHON = "/usr/bin/python3"
DOCKER_IMAGE = "sandboxd/python:bookworm"
TIMEOUT_S = 60


def _local(work: Path) -> CodeExecutor:
    from autogen_ext.code_executors.local import LocalCommandLineCodeExecutor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # it runs code unsandboxed: measured so
        # the jail's interpreter, so that the programs run on the same Python everywhere
        venv = SimpleNamespace(env_exe=JAIL_PYTHON, bin_path="/usr/bin")
        return LocalCommandLineCodeExecutor(
            timeout=TIMEOUT_S, work_dir=work / "local", virtual_env_context=venv
        )


def _docker(work: Path) -> CodeExecutor:
    from autogen_ext.code_executors.docker import DockerCommandLineCodeExecutor

    # AutoGen runs `python FILE`; the image has python3 only (AutoGen's container is root and
    # writable, so the link is made at its start)
    return DockerCommandLineCodeExecutor(
        image=DOCKER_IMAGE,
        timeout=TIMEOUT_S,
        work_dir=work / "docker",
        init_command="ln -sf /usr/bin/python3 /usr/local/bin/python",
    )


async def _loop(
    executors: dict[str, CodeExecutor], progs: list[tuple[str, str]]
) -> dict[str, float]:
    times = dict.fromkeys(executors, 0.0)
    token = CancellationToken()
    for executor in executors.values():
        await executor.start()
    try:
        for task, code in progs:
            for name, executor in executors.items():
                t0 = time.perf_counter()
                result = await executor.execute_code_blocks([CodeBlock(code, "python")], token)
                times[name] += time.perf_counter() - t0
                if result.exit_code != 0:
                    raise RuntimeError(
                        f"{name}: {task} failed ({result.exit_code}): {result.output[-300:]}"
                    )
    finally:
        for executor in executors.values():
            await executor.stop()
    return times


def measure(limit: int | None = None) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="sandboxd-bench-", dir="/var/tmp"))
    work.chmod(0o711)
    docker = docker_problem() is None
    daemon = Daemon(work, "autogen", docker={"enabled": docker}).start()
    try:
        with PeerWorker() as peer:
            progs = programs(peer.humaneval_problems())[:limit]
        executors: dict[str, CodeExecutor] = {
            "local": _local(work),
            "sandboxd": SandboxdCodeExecutor(daemon.url, token=daemon.token, timeout=TIMEOUT_S),
            "sandboxd_fresh": SandboxdCodeExecutor(
                daemon.url, token=daemon.token, timeout=TIMEOUT_S, keep_files=False
            ),
            "sandboxd_state": SandboxdCodeExecutor(
                daemon.url, token=daemon.token, timeout=TIMEOUT_S, keep_state=True
            ),
        }
        if docker:
            executors["docker"] = _docker(work)
            executors["sandboxd_docker"] = SandboxdCodeExecutor(
                daemon.url, token=daemon.token, timeout=TIMEOUT_S, backend="docker"
            )
        times = asyncio.run(_loop(executors, progs))
    finally:
        daemon.stop()
    return {"n": len(progs), "times": times, "docker": docker}


LABELS = {
    "local": "AutoGen `LocalCommandLineCodeExecutor`, /usr/bin/python3, no isolation (baseline)",
    "sandboxd": "`SandboxdCodeExecutor`, nsjail (a sandbox per executor, a jail per block)",
    "sandboxd_fresh": "`SandboxdCodeExecutor(keep_files=False)`, nsjail (a fresh jail per block, "
    "from the warm pool)",
    "sandboxd_state": "`SandboxdCodeExecutor(keep_state=True)`, nsjail (every block a cell of "
    "one interpreter context, kept warm)",
    "docker": f"AutoGen `DockerCommandLineCodeExecutor`, `{DOCKER_IMAGE}` (root in the container, "
    "no memory/pids/network limits)",
    "sandboxd_docker": "`SandboxdCodeExecutor`, Docker backend (a container per block)",
}


def report(data: dict[str, Any]) -> str:
    n, times = data["n"], data["times"]
    base = times["local"]
    rows = [
        "| executor | passed | total s | ms per problem | ratio vs local |",
        "|---|---|---|---|---|",
    ]
    for key, label in LABELS.items():
        if key in times:
            t = times[key]
            rows.append(f"| {label} | {n}/{n} | {t:.2f} | {t / n * 1e3:.1f} | {t / base:.2f}x |")
    note = [] if data["docker"] else ["", "Docker did not answer here: its rows are left out."]
    title = f"## AutoGen's HumanEval loop on AutoGen executors ({n} problems, one at a time)"
    return "\n".join([title, "", *rows, *note, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    text = report(measure(args.problems))
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
