"""Many runs at once, and back-pressure when the daemon is saturated."""

from __future__ import annotations

import ast
import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandboxd.client import SyncClient
from sandboxd.errors import Overloaded
from tests.daemon import Daemon


@pytest.mark.usefixtures("no_leftovers")
async def test_twenty_concurrent_runs(daemon: Daemon) -> None:
    async with daemon.aclient() as client:
        results = await asyncio.gather(
            *(
                client.run(
                    code=f"import time, os\ntime.sleep(0.2)\nprint({i}, os.listdir('.'))",
                    files=[{"path": f"only-{i}.txt", "content": str(i)}],
                )
                for i in range(20)
            )
        )
    for i, result in enumerate(results):
        assert result.status == "ok", result
        index, listing = result.stdout.split(" ", 1)
        assert index == str(i)
        assert sorted(ast.literal_eval(listing)) == ["main.py", f"only-{i}.txt"]
    assert len({r.id for r in results}) == 20


async def test_runs_do_not_block_each_other(daemon: Daemon) -> None:
    """A long run and many short ones at once: the short ones finish first."""
    async with daemon.aclient() as client:
        slow = asyncio.create_task(client.run(code="import time; time.sleep(3)"))
        await asyncio.sleep(0.2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        quick = await asyncio.gather(*(client.run(code="print('q')") for _ in range(5)))
        assert loop.time() - started < 2.5
        assert not slow.done()
        assert all(r.stdout == "q\n" for r in quick)
        assert (await slow).status == "ok"


@pytest.fixture
def tiny_daemon(workdir: Path) -> Iterator[Daemon]:
    d = Daemon(workdir, "tiny", max_concurrent_runs=1, max_queued_runs=1)
    d.start()
    yield d
    assert d.stop() == 0


def wait_for_admission(client: SyncClient, admitted: int) -> None:
    for _ in range(200):  # at most ~10 s
        info = client.info()
        if info.active_runs + info.queued_runs >= admitted:
            return
        time.sleep(0.05)
    pytest.fail(f"the daemon never admitted {admitted} runs")


def test_saturated_daemon_answers_503_with_retry_after(tiny_daemon: Daemon) -> None:
    body = json.dumps({"code": "import time; time.sleep(2)"}).encode()
    results: list[str] = []

    def long_run() -> None:
        req = tiny_daemon.request("/v1/runs", data=body)
        with urllib.request.urlopen(req, timeout=30) as resp:
            results.append(json.loads(resp.read())["status"])

    threads = [threading.Thread(target=long_run) for _ in range(2)]  # one runs, one queues
    try:
        with tiny_daemon.client() as client:
            for t in threads:
                t.start()
                wait_for_admission(client, len(results) + threads.index(t) + 1)
            req = tiny_daemon.request("/v1/runs", data=b"{}")
            with pytest.raises(urllib.error.HTTPError) as http_err:
                urllib.request.urlopen(req, timeout=30)
            assert http_err.value.code == 503
            assert http_err.value.headers["Retry-After"] == "1"
            assert json.loads(http_err.value.read())["error"]["code"] == "overloaded"
            with pytest.raises(Overloaded) as exc:
                client.run(code="print(1)")
            assert exc.value.retry_after_s == 1
    finally:
        for t in threads:
            t.join(timeout=30)
    assert results == ["ok", "ok"]
    with tiny_daemon.client() as client:
        assert client.run(code="print('after')").stdout == "after\n"
