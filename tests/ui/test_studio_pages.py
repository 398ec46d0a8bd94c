"""The Studio's pages in a real browser on a real daemon: sign-in, a live run and a cancel
in the playground, a run by deep link, a sandbox's files, the audit chain, and scopes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.daemon import Daemon
from tests.ui.conftest import Studio, with_client


def test_sign_in_keeps_the_token_in_session_storage_only(studio: Studio, daemon: Daemon) -> None:
    page = studio.page
    page.goto(studio.url())
    studio.shot("signin")
    page.fill("input[name=token]", "sbd_000000000000_" + "x" * 43)
    page.click("button:has-text('Sign in')")
    page.wait_for_selector(".error")
    assert page.locator("nav").count() == 0
    assert page.evaluate("() => sessionStorage.getItem('sandboxd.token')") is None
    studio.sign_in()
    assert page.evaluate("() => sessionStorage.getItem('sandboxd.token')") == daemon.token
    assert daemon.token not in page.url
    assert page.context.cookies() == []
    assert page.evaluate("() => localStorage.length") == 0
    studio.open("")  # a reload keeps the session: no second sign-in
    assert page.locator("nav").count() == 1
    studio.shot("runs")
    page.click("button:has-text('Sign out')")
    page.wait_for_selector("input[name=token]")
    assert page.evaluate("() => sessionStorage.getItem('sandboxd.token')") is None
    # the token is in no log line and no audit record
    assert daemon.token not in daemon.log.read_text()
    with urllib.request.urlopen(daemon.request("/v1/audit?limit=1000"), timeout=30) as resp:
        assert daemon.token not in resp.read().decode()


def test_playground_shows_output_live_then_the_result(studio: Studio) -> None:
    studio.sign_in(path="playground")
    page = studio.page
    code = (
        "import time\n"
        "print('first line', flush=True)\n"
        "time.sleep(2)\n"
        "print('second line', flush=True)\n"
    )
    page.fill("textarea[name=code]", code)
    assert "first line" in page.locator(".snippets").inner_text()  # the curl/Python follow
    page.click("button:has-text('Run')")
    page.wait_for_selector("pre.stream-stdout:has-text('first line')")
    # live: the first line is shown while the run still runs, before the second is printed
    assert page.locator(".live .status-running").count() == 1
    assert "second line" not in page.locator("pre.stream-stdout").inner_text()
    studio.shot("playground-live")
    page.wait_for_selector(".result .status-ok")
    assert "second line" in page.locator("pre.stream-stdout").inner_text()
    run_link = page.locator(".live a").first
    assert run_link.inner_text().startswith("run_")
    studio.shot("playground-done")


def test_cancel_a_long_run_from_the_playground(studio: Studio) -> None:
    studio.sign_in(path="playground")
    page = studio.page
    page.fill("textarea[name=code]", "import time\nprint('started', flush=True)\ntime.sleep(60)\n")
    page.fill("input[name=wall_time_s]", "90")
    page.click("button:has-text('Run')")
    page.wait_for_selector("pre.stream-stdout:has-text('started')")
    page.click(".live button:has-text('Cancel')")
    page.wait_for_selector(".result .status-cancelled")
    assert "Cancelled" in page.locator(".result .fired").inner_text()
    studio.shot("cancelled")


def test_a_run_opens_by_deep_link_with_its_limit_in_words(studio: Studio, daemon: Daemon) -> None:
    run = with_client(
        daemon,
        lambda c: c.run(
            code="print('deep link output')\nwhile True: pass\n",
            limits={"wall_time_s": 1, "cpu_time_s": 5},
            env={"SOME_NAME": "secret-value"},
        ),
    )
    assert run.status == "timeout"
    studio.sign_in(path=f"runs/{run.id}")
    page = studio.page
    page.wait_for_selector("pre.stream-stdout:has-text('deep link output')")
    assert "Wall-clock limit" in page.locator(".fired").inner_text()
    body = page.locator("main").inner_text()
    assert run.trace_id and run.trace_id in body
    assert "SOME_NAME" in body and "secret-value" not in body  # env names, never values
    curl = page.locator(".copy:has-text('curl') pre").inner_text()
    assert f"{daemon.url}/v1/runs" in curl and '"wall_time_s":1' in curl
    assert daemon.token not in body
    studio.shot("run")
    # the runs page lists it, and filters by status
    studio.open("")
    with_client(daemon, lambda c: c.run(code="print('ok')"))  # a run the filter leaves out
    page.wait_for_selector("table.runs tbody .status-ok")
    page.select_option("select >> nth=0", "timeout")
    page.wait_for_selector("table.runs tbody .status-ok", state="detached")  # the filter applied
    assert page.locator(f"table.runs a:has-text('{run.id}')").count() == 1


def test_browse_a_sandbox_upload_view_download_delete(
    studio: Studio, daemon: Daemon, tmp_path: Path
) -> None:
    sbx = with_client(daemon, lambda c: c.create_sandbox(limits={"disk_mib": 16}))
    with_client(daemon, lambda c: c.put_file(sbx.id, "data/notes.txt", b"kept in the sandbox\n"))
    try:
        studio.sign_in(path=f"sandboxes/{sbx.id}")
        page = studio.page
        page.wait_for_selector("a.folder:has-text('data/')")
        assert "16 MiB" in page.locator("table.kv").inner_text()
        page.click("a.folder:has-text('data/')")
        page.wait_for_selector("td:has-text('notes.txt')")
        page.click("tr:has-text('notes.txt') button:has-text('view')")
        page.wait_for_selector(".viewer pre:has-text('kept in the sandbox')")
        upload = tmp_path / "upload.bin"
        upload.write_bytes(bytes(range(256)) * 4)
        page.set_input_files("input[type=file]", str(upload))
        page.wait_for_selector("td:has-text('upload.bin')")
        with page.expect_download() as got:
            page.click("tr:has-text('upload.bin') button:has-text('download')")
        saved = tmp_path / "downloaded.bin"
        got.value.save_as(saved)
        assert saved.read_bytes() == upload.read_bytes()
        assert with_client(daemon, lambda c: c.get_file(sbx.id, "data/upload.bin")) == (
            upload.read_bytes()
        )
        studio.shot("sandbox")
        page.click("tr:has-text('notes.txt') button:has-text('delete')")
        page.wait_for_selector("td:has-text('notes.txt')", state="detached")
        # a run in it, live, sees the uploaded file
        page.fill("textarea[name=sandbox-code]", "import os; print(sorted(os.listdir('data')))")
        page.click("button:has-text('Run in python')")
        page.wait_for_selector(".result pre.stream-stdout:has-text(\"['upload.bin']\")")
        with page.expect_download() as archive:
            page.click("button:has-text('Download archive')")
        assert archive.value.suggested_filename == f"{sbx.id}.tar"
    finally:
        with_client(daemon, lambda c: c.delete_sandbox(sbx.id))


def test_verify_the_audit_chain_and_follow_a_record(studio: Studio, daemon: Daemon) -> None:
    run = with_client(daemon, lambda c: c.run(code="print('audited')"))
    studio.sign_in(path="audit")
    page = studio.page
    page.click("button:has-text('Verify chain')")
    page.wait_for_selector(".verdict-ok:has-text('chain intact')")
    deadline = time.monotonic() + 90
    while page.locator(f"table.audit a:has-text('{run.id}')").count() == 0:
        assert time.monotonic() < deadline, "never reached the run on the audit pages"
        page.click("button:has-text('later')")  # the trail is oldest first: page on to it
        page.wait_for_timeout(200)
    page.fill("input[placeholder='e.g. run.create']", "run.create")
    page.wait_for_function(
        "() => [...document.querySelectorAll('table.audit tbody td:nth-child(4)')]"
        ".every((td) => td.textContent === 'run.create')"
    )
    assert page.locator(f"table.audit a:has-text('{run.id}')").count() == 1
    studio.shot("audit")
    page.click(f"table.audit a:has-text('{run.id}')")
    page.wait_for_selector("pre.stream-stdout:has-text('audited')")
    assert page.url.endswith(f"/ui/runs/{run.id}")


def test_a_run_only_token_sees_no_audit_page(studio: Studio, daemon: Daemon) -> None:
    token = daemon.make_token("ui-runner", "run")
    studio.sign_in(token)
    page = studio.page
    nav = page.locator("nav").inner_text()
    assert "Runs" in nav and "Playground" in nav
    assert "Audit" not in nav and "Overview" not in nav and "Sandboxes" not in nav
    studio.open("audit")
    page.wait_for_selector(".forbidden")
    assert page.locator("table.audit").count() == 0
    assert "Verify chain" not in page.locator("main").inner_text()
    studio.shot("audit-forbidden")


def test_overview_draws_the_daemons_figures(studio: Studio, daemon: Daemon) -> None:
    with_client(daemon, lambda c: c.run(code="print(1)"))
    studio.sign_in(path="overview")
    page = studio.page
    page.wait_for_function(
        "() => [...document.querySelectorAll('figure.chart rect.bar')]"
        ".some((r) => Number(r.getAttribute('height')) > 0)"
    )
    assert page.locator("text=nsjail/python").count() == 1
    assert page.locator(".card").count() == 5
    with urllib.request.urlopen(daemon.request("/v1/stats"), timeout=30) as resp:
        stats = json.loads(resp.read())
    assert sum(stats["runs_per_minute"]) >= 1
    studio.shot("overview")
    studio.open("")  # by now the session's runs fill the list (README's picture)
    page.wait_for_selector("table.runs tbody tr")
    studio.shot("runs-list")


def test_sandboxes_page_lists_and_creates(studio: Studio, daemon: Daemon) -> None:
    studio.sign_in(path="sandboxes")
    page = studio.page
    page.click("button:has-text('Create')")
    page.wait_for_url("**/ui/sandboxes/sbx_*")
    sbx_id = page.url.rsplit("/", 1)[-1]
    page.wait_for_selector("text=Policy")
    studio.shot("sandboxes")
    listed = lambda: [s.id for s in with_client(daemon, lambda c: c.list_sandboxes())]  # noqa: E731
    assert sbx_id in listed()
    page.click("button:has-text('Delete sandbox')")
    page.wait_for_url("**/ui/sandboxes")
    assert sbx_id not in listed()


def test_the_playgrounds_snippets_run_as_shown(
    studio: Studio, daemon: Daemon, tmp_path: Path
) -> None:
    """What the playground offers to copy is a working command: curl, `sandboxd run` and the
    Python client each run the program as the form describes it."""
    studio.sign_in(path="playground")
    page = studio.page
    page.fill("textarea[name=code]", "import os\nprint('snippet', os.environ['GREETING'])\n")
    page.fill("textarea[name=env]", "GREETING=it's here")
    snippets = {
        label: page.locator(f".copy:has-text('{label}') pre").inner_text()
        for label in ("curl", "sandboxd run", "Python client")
    }
    assert daemon.token not in "".join(snippets.values())
    env = {
        **os.environ,
        "SANDBOXD_TOKEN": daemon.token,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    runs = {
        "curl": ["bash", "-c", snippets["curl"]],
        "sandboxd run": ["bash", "-c", snippets["sandboxd run"]],
        "Python client": [sys.executable, "-c", snippets["Python client"]],
    }
    for label, argv in runs.items():
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path
        )
        assert proc.returncode == 0, (label, proc.stderr)
        assert "snippet it's here" in proc.stdout, (label, proc.stdout)


def test_a_running_run_streams_live_on_its_page_and_cancels(studio: Studio, daemon: Daemon) -> None:
    """A run started elsewhere (here: the Python client) shows its output live on its page
    (GET /v1/runs/{id}/events), and its Cancel button ends it."""
    code = "import time\nprint('from elsewhere', flush=True)\ntime.sleep(60)\n"
    with ThreadPoolExecutor(1) as pool:
        started = pool.submit(
            with_client, daemon, lambda c: c.run(code=code, limits={"wall_time_s": 90})
        )
        studio.sign_in()
        page = studio.page
        page.select_option("select >> nth=0", "running")
        page.click("table.runs tr:has(.status-running) a")
        page.wait_for_selector(".live pre.stream-stdout:has-text('from elsewhere')")
        assert not started.done()
        studio.shot("run-live")
        page.click("button:has-text('Cancel run')")
        result = started.result(timeout=60)
    assert result.status == "cancelled" and result.stdout == "from elsewhere\n"
    page.wait_for_selector(".result .status-cancelled")
    assert page.url.endswith(f"/ui/runs/{result.id}")


def test_a_runs_network_decisions_are_shown(studio: Studio, daemon: Daemon) -> None:
    """The egress proxy's refusals (host, port, reason) on the run page; no network needed:
    the proxy refuses a host no rule names before resolving anything."""
    code = (
        "import urllib.request, urllib.error\n"
        "try:\n"
        "    urllib.request.urlopen('http://unlisted.test/', timeout=10)\n"
        "except urllib.error.HTTPError as e:\n"
        "    print('refused', e.code)\n"
    )
    network = {"mode": "allowlist", "allow": ["example.org"]}
    run = with_client(daemon, lambda c: c.run(code=code, network=network))
    assert run.stdout == "refused 403\n" and run.network and run.network.denied
    studio.sign_in(path=f"runs/{run.id}")
    page = studio.page
    page.wait_for_selector("h3:has-text('denied')")
    row = page.locator("table.list tr:has-text('unlisted.test')").inner_text()
    assert "80" in row and run.network.denied[0].reason in row
    studio.shot("network")
