"""Everything a run, a file or a model produces is hostile: the Studio shows it as text.

A program prints markup, writes a file named like markup, a sandbox holds one, a solve reports
markup as its task, failing test ids, reviewer points and patch, and a request puts markup in
an audit record's target. Every page that shows them must show the characters, create no
element from them and run nothing: `window.__xss` stays undefined."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from tests.daemon import Daemon
from tests.ui.conftest import Studio, with_client

IMG = '<img src=x onerror="window.__xss=1">'
SCRIPT = "<script>window.__xss=1</script>"
PROGRAM = f"""
import sys
print({IMG!r})
print({SCRIPT!r}, file=sys.stderr)
open({IMG!r}, "w").write({SCRIPT!r})
"""


def assert_inert(studio: Studio, *texts: str) -> None:
    page = studio.page
    shown = page.locator("main").inner_text()
    for text in texts:
        assert text in shown, f"{text!r} is not shown as text"
    assert studio.xss() is None
    assert page.locator("img").count() == 0
    assert page.evaluate("() => document.scripts.length") == 1  # the Studio's own module


def test_hostile_run_output_and_file_names_are_text(studio: Studio, daemon: Daemon) -> None:
    run = with_client(daemon, lambda c: c.run(code=PROGRAM, collect=["*"]))
    assert run.status == "ok" and IMG in [f.path for f in run.files]
    studio.sign_in(path=f"runs/{run.id}")
    studio.page.wait_for_selector("pre.stream-stdout:has-text('onerror')")
    assert_inert(studio, IMG, SCRIPT)
    assert IMG in studio.page.locator("ul.files .path").all_inner_texts()
    studio.shot("run")

    studio.open("playground")  # the same output, streamed live
    studio.page.fill("textarea[name=code]", PROGRAM)
    studio.page.click("button:has-text('Run')")
    studio.page.wait_for_selector(".result .status-ok")
    assert_inert(studio, IMG, SCRIPT)
    studio.shot("playground")


def test_hostile_sandbox_file_is_text(studio: Studio, daemon: Daemon) -> None:
    sbx = with_client(daemon, lambda c: c.create_sandbox(limits={"disk_mib": 8}))
    try:
        with_client(daemon, lambda c: c.put_file(sbx.id, IMG, SCRIPT.encode()))
        studio.sign_in(path=f"sandboxes/{sbx.id}")
        page = studio.page
        page.wait_for_selector("td .path")
        page.click("table.files button:has-text('view')")
        page.wait_for_selector(".viewer pre")
        assert_inert(studio, IMG, SCRIPT)
        studio.shot("sandbox")
    finally:
        with_client(daemon, lambda c: c.delete_sandbox(sbx.id))


def post(daemon: Daemon, path: str, body: object) -> dict[str, object]:
    req = daemon.request(path, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        answer: dict[str, object] = json.loads(resp.read())
    return answer


def test_hostile_solve_and_audit_target_are_text(studio: Studio, daemon: Daemon) -> None:
    spec = {"task": SCRIPT, "repo": IMG, "test_command": IMG, "models": {"writer": IMG}}
    solve = post(daemon, "/v1/solves", spec)
    events = [
        {"kind": "tests", "round": 0, "passed": False, "failing": [IMG], "summary": SCRIPT},
        {"kind": "edits", "round": 1, "files": [IMG]},
        {"kind": "tests", "round": 1, "passed": True, "patch": f"+{IMG}\n-{SCRIPT}\n"},
        {"kind": "review", "round": 1, "verdict": "REVISE", "points": [IMG, SCRIPT]},
        {"kind": "end", "status": "gave_up", "reason": IMG, "patch": f"+{SCRIPT}\n"},
    ]
    post(daemon, f"/v1/solves/{solve['id']}/events", {"events": events})
    studio.sign_in(path="solves")
    studio.page.wait_for_selector(f"a:has-text('{solve['id']}')")
    assert_inert(studio, IMG, SCRIPT)
    studio.open(f"solves/{solve['id']}")
    studio.page.wait_for_selector(".verdict-REVISE")
    assert_inert(studio, IMG, SCRIPT, f"+{IMG}")
    studio.shot("solve")

    # an id in a request path becomes an audit record's target
    quoted = urllib.parse.quote(IMG, safe="")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(daemon.request(f"/v1/sandboxes/{quoted}"), timeout=30)
    assert refused.value.code == 404
    refused.value.close()
    studio.open("audit")
    page = studio.page
    deadline = time.monotonic() + 90
    while IMG not in page.locator("table.audit").inner_text():
        assert time.monotonic() < deadline, "never reached the record on the audit pages"
        page.click("button:has-text('later')")
        page.wait_for_timeout(200)
    assert_inert(studio, IMG)
    studio.shot("audit")
