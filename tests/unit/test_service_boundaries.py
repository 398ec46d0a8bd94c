"""HTTP, domain and storage stay apart (issue 15): the claims the layout makes, checked.

- Every SQL statement is in the store layer (`sandboxd/service/queries.py`, the schema in
  `store.py`): no handler or manager holds one.
- A run's request is digested once, and the `RunResult` a backend returns is not changed
  after it returns (the daemon builds the caller's result from it once).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

import sandboxd
from sandboxd.models import RunRequest, RunResult
from sandboxd.service import policy
from tests.unit.conftest import App

PACKAGE = Path(sandboxd.__file__).parent
STORE_LAYER = {PACKAGE / "service" / "queries.py", PACKAGE / "service" / "store.py"}
SQL = re.compile(r"\b(SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM)\b")


def test_no_sql_outside_the_store_layer() -> None:
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path in STORE_LAYER:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            text = node.value if isinstance(node, ast.Constant) else None
            if isinstance(text, str) and SQL.search(text):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert found == []


async def test_a_run_is_digested_once(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[RunRequest] = []
    real = policy.request_digest

    def counted(request: RunRequest) -> dict[str, object]:
        calls.append(request)
        return real(request)

    for module in list(sys.modules.values()):
        if module.__name__.startswith("sandboxd.") and vars(module).get("request_digest") is real:
            monkeypatch.setattr(module, "request_digest", counted)
    resp = await app.http.post("/v1/runs", json={"code": "print('hi')"}, headers=app.headers())
    assert resp.status == 200, await resp.text()
    assert len(calls) == 1


async def test_the_backends_result_is_not_changed_after_it_returns(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    returned: list[tuple[RunResult, str]] = []
    real = app.backend.run

    async def run(*args: object, **kwargs: object) -> RunResult:
        result = await real(*args, **kwargs)  # type: ignore[arg-type]
        returned.append((result, result.model_dump_json()))
        return result

    monkeypatch.setattr(app.backend, "run", run)
    resp = await app.http.post("/v1/runs", json={"code": "print('hi')"}, headers=app.headers())
    assert resp.status == 200
    body = RunResult.model_validate(await resp.json())
    assert body.trace_id == resp.headers["X-Trace-Id"]
    [(result, as_returned)] = returned
    assert result.model_dump_json() == as_returned
    assert (result.id, result.stdout) == (body.id, body.stdout)
