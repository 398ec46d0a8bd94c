"""A scripted OpenAI-compatible chat server: replays replies from a fixture file, in order.

Tests (and anyone trying coder without a model) point coder at it, so the real `openai` client
and HTTP are exercised. A fixture is JSON: {"steps": [step, ...]} where a step is
  {"reply": "text", "model": "name" (optional check), "expect": ["substring", ...] (optional),
   "status": 500 | 429 (answer an error instead), "delay_s": 0.5 (wait first),
   "when": {"seed": 2, "model": "name"} (optional: which requests may take the step),
   "response_format": "json_schema" (optional check: the request asked structured output)}.
A request takes the first step left whose `when` fields all equal the request's (a step without
`when` fits any request), so concurrent solves (candidates, each with its own seed) follow
their own script. A request that does not fit its step gets HTTP 400 saying why, so a wrong
script fails loudly. The log records each request's messages, model, seed, temperature and
`response_format`.

    python -m coder.testing.scripted FIXTURE [--port 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from aiohttp import web

STEPS = web.AppKey("steps", list)
LOG = web.AppKey("log", list)


def _error(status: int, message: str, kind: str) -> web.Response:
    headers = {"retry-after": "0"} if status == 429 else {}
    body = {"error": {"message": message, "type": kind, "code": None, "param": None}}
    return web.json_response(body, status=status, headers=headers)


async def completions(request: web.Request) -> web.Response:
    body: dict[str, Any] = await request.json()
    messages = body.get("messages", [])
    text = "\n".join(str(m.get("content", "")) for m in messages)
    entry = {
        "model": body.get("model"),
        "chars": len(text),
        "messages": messages,
        "seed": body.get("seed"),
        "temperature": body.get("temperature"),
        "response_format": body.get("response_format"),
    }
    request.app[LOG].append(entry)
    steps = request.app[STEPS]
    fits = [
        i
        for i, st in enumerate(steps)
        if all(body.get(k) == v for k, v in dict(st.get("when") or {}).items())
    ]
    if not fits:
        why = "no steps left in the script" if not steps else "no step left fits this request"
        return _error(400, f"scripted server: {why}", "script_exhausted")
    step = steps.pop(fits[0])
    entry["step"] = step
    if step.get("delay_s"):
        await asyncio.sleep(float(step["delay_s"]))
    if "model" in step and step["model"] != body.get("model"):
        return _error(
            400,
            f"scripted server: step wants model {step['model']!r}, got {body.get('model')!r}",
            "script_mismatch",
        )
    wanted = step.get("response_format")
    asked = (body.get("response_format") or {}).get("type")
    if wanted is not None and asked != wanted:
        return _error(
            400,
            f"scripted server: step wants response_format {wanted!r}, got {asked!r}",
            "script_mismatch",
        )
    missing = [s for s in step.get("expect", []) if s not in text]
    if missing:
        return _error(400, f"scripted server: the prompt lacks {missing!r}", "script_mismatch")
    if "status" in step:
        return _error(int(step["status"]), f"scripted failure {step['status']}", "server_error")
    reply = str(step["reply"])
    usage = {"prompt_tokens": len(text) // 4 + 1, "completion_tokens": len(reply) // 4 + 1}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return web.json_response(
        {
            "id": f"chatcmpl-scripted-{len(request.app[LOG])}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": reply},
                }
            ],
            "usage": usage,
        }
    )


async def requests_log(request: web.Request) -> web.Response:
    return web.json_response(request.app[LOG])


def make_app(steps: list[dict[str, Any]]) -> web.Application:
    app = web.Application()
    app[STEPS] = list(steps)
    app[LOG] = []
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_get("/_requests", requests_log)
    return app


def load_steps(path: Path) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = json.loads(path.read_text())["steps"]
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fixture", type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    web.run_app(make_app(load_steps(args.fixture)), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
