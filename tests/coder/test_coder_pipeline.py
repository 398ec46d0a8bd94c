"""Roles from config, end to end: typed verdicts (structured output asked of the endpoint and
recorded by the scripted server; one repair, then the named stop `invalid_reply`), the security
reviewer's veto, `coder roles`, and a bad `[roles]` table refused in one line (exit 2) before
anything runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from coder.testing.harness import (
    REPO,
    coder_env,
    example,
    run_coder,
    scripted,
    solve,
    write_config,
)
from tests.daemon import Daemon


def events(result: dict[str, Any]) -> list[dict[str, Any]]:
    path = Path(str(result["trace_path"]))
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_an_invalid_verdict_gets_one_repair_then_a_named_stop(
    daemon: Daemon, tmp_path: Path
) -> None:
    repo = example("calculator", tmp_path)
    with scripted("reply_invalid") as server:
        proc, result = solve(repo, server, daemon)
        assert server.steps_left == 0
        repair = server.requests[-1]["messages"]
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert result["status"] == "invalid_reply"
    assert "reviewer's reply was not valid after one repair" in result["reason"]
    assert "verdict: Input should be 'approve', 'revise' or 'veto'" in result["reason"]
    assert [m["role"] for m in repair[-2:]] == ["assistant", "user"]
    assert repair[-2]["content"] == "lgtm"  # the invalid reply is shown back, with the error
    invalid = [e for e in events(result) if e["type"] == "reply.invalid"]
    assert [e["repair"] for e in invalid] == [True, False]
    assert result["reviewer"]["calls"] == 2
    assert Path(result["patch_path"]).read_text()  # the partial work is kept


def test_structured_output_is_asked_for_and_a_repair_can_succeed(
    daemon: Daemon, tmp_path: Path
) -> None:
    repo = example("calculator", tmp_path)
    with scripted("reply_repaired") as server:
        proc, result = solve(repo, server, daemon, structured_output=True)
        formats = [r["response_format"] for r in server.requests]
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert result["status"] == "fixed" and result["reviewer"]["calls"] == 2
    assert formats[0] is None  # the writer answers edit blocks, not JSON
    schema = formats[1]["json_schema"]
    assert formats[1]["type"] == "json_schema" and schema["name"] == "verdict"
    assert schema["schema"]["properties"]["verdict"]["enum"] == ["approve", "revise", "veto"]
    assert formats[2] == formats[1]
    requests = [e for e in events(result) if e["type"] == "model.request"]
    assert [e.get("structured", False) for e in requests] == [False, True, True]


def test_the_security_reviewer_vetoes_a_new_subprocess_call(daemon: Daemon, tmp_path: Path) -> None:
    repo = example("calculator", tmp_path)
    roles = {"security": {"enabled": True, "model": "security", "structured_output": True}}
    with scripted("security_veto") as server:
        proc, result = solve(repo, server, daemon, roles=roles)
        assert server.steps_left == 0
        security = server.requests[-1]
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert result["status"] == "vetoed"
    assert "security vetoed the change" in result["reason"]
    assert "starts a subprocess" in result["reason"]
    assert security["model"] == "security" and security["response_format"] is not None
    # It saw the task, the results and the diff, and nothing of the writer's conversation.
    prompt = "\n".join(m["content"] for m in security["messages"])
    assert "+    import subprocess" in prompt and "<<<<<<< SEARCH" not in prompt
    assert "- added lines that touch a process: import subprocess" in prompt  # code's flag
    assert set(result["roles"]) == {"writer", "reviewer", "security"}
    assert result["roles"]["security"]["calls"] == 1
    verdicts = [(e["agent"], e["verdict"]) for e in events(result) if e["type"] == "review.verdict"]
    assert verdicts == [("reviewer", "APPROVE"), ("security", "VETO")]
    sizes = [e for e in events(result) if e["type"] == "model.request"]
    assert {e["agent"] for e in sizes} == {"writer", "reviewer", "security"}
    assert all(e["prompt_chars"] > 0 for e in sizes)


def test_coder_roles_prints_the_effective_pipeline(tmp_path: Path) -> None:
    repo = example("calculator", tmp_path)
    (repo / "style.md").write_text("Check the names.\n")
    (repo / ".coder.toml").write_text(
        "[roles.writer]\ntemperature = 0.2\nseed = 7\n\n"
        '[roles.security]\nenabled = true\nmodel = "gpt-4.1-mini"\n\n'
        '[roles.style]\nkind = "reviewer"\nprompt_file = "style.md"\non = "every_round"\n'
        "budget_share = 0.25\n"
    )
    proc = run_coder("roles", env=coder_env(None), cwd=repo)  # its .coder.toml, as solve's
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"pipeline for {repo.resolve()}:"
    assert lines[1].startswith("1. writer (writer): model gpt-4o-mini;")
    assert "temperature 0.2, seed 7" in lines[1]
    assert lines[2].startswith("2. reviewer (reviewer)") and 'after = "green"' in lines[2]
    assert lines[3].startswith("3. security (security): model gpt-4.1-mini")
    assert "can veto" in lines[3]
    assert lines[4].startswith("4. style (reviewer)") and 'on = "every_round"' in lines[4]
    assert "prompt style.md" in lines[4] and "budget share 0.25" in lines[4]
    assert lines[5] == "candidates: 1"
    as_json = run_coder("roles", "--json", env=coder_env(None), cwd=repo)
    doc = json.loads(as_json.stdout)
    assert [r["name"] for r in doc["roles"]] == ["writer", "reviewer", "security", "style"]
    assert doc["off"] == [] and doc["roles"][3]["acts"] == "every_round"
    plain = run_coder("roles", str(example("textutils", tmp_path)), env=coder_env(None))
    assert plain.stdout.splitlines()[-2:] == ["off: security", "candidates: 1"]


BAD = [
    ('[roles.style]\nafter = "edit"\n', "roles.style: a new role needs its kind"),
    ('[roles.style]\nkind = "reviewer"\nafter = "later"\n', "bad setting roles.style.after"),
    ('[roles.writer]\nafter = "green"\n', "roles.writer: the writer acts every round"),
    ('[roles.reviewer]\nkind = "security"\n', "a built-in role keeps its kind"),
    ('[roles.x]\nkind = "writer"\n', "there is one writer"),
    ('[roles.reviewer]\nprompt_file = "nowhere.md"\n', "roles.reviewer.prompt_file: cannot read"),
    ('[roles.reviewer]\nprompt_file = "../../x.md"\n', "x.md is outside the repository"),
    ('[roles.reviewer]\nafter = "green"\non = "every_round"\n', "either after or on"),
    ("candidates = 0\n", "bad setting candidates"),
    ("[[candidate]]\ntemperature = 9\n", "bad setting candidate.0.temperature"),
]


def test_a_bad_roles_table_is_one_line_and_exit_2(tmp_path: Path) -> None:
    repo = example("calculator", tmp_path)
    with scripted("none") as server:
        for n, (toml, expected) in enumerate(BAD):
            cfg = write_config(tmp_path / f"bad{n}.toml")
            base = cfg.read_text()  # a table goes last, a top-level key first
            cfg.write_text(base + toml if toml.startswith("[") else toml + base)
            for cmd in (
                ["roles", str(repo), "--config", str(cfg)],
                ["solve", str(repo), "--config", str(cfg), "--base-url", server.url],
            ):
                proc = run_coder(*cmd, env=coder_env(None))
                assert proc.returncode == 2, (toml, proc.stderr)
                lines = proc.stderr.strip().splitlines()
                assert len(lines) == 1 and expected in lines[0], (toml, lines)
        assert server.requests == []
    assert not (repo / ".coder").exists()  # nothing was written for a refused config


def test_the_readme_roles_example_works_as_written(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## coder: best of N candidates, and roles from config", 1)[1]
    toml = section.split("```toml\n", 1)[1].split("```", 1)[0]
    shown = section.split("document); in a repository with the file above:\n\n```\n", 1)[1]
    shown = shown.split("```", 1)[0]
    repo = example("calculator", tmp_path)
    (repo / ".coder.toml").write_text(toml)
    proc = run_coder("roles", env=coder_env(None), cwd=repo)
    assert proc.returncode == 0, proc.stderr
    expected = shown.replace("/path/to/repo", str(repo.resolve()))
    assert proc.stdout == expected


def test_a_role_after_each_edit_with_its_own_prompt_file(daemon: Daemon, tmp_path: Path) -> None:
    """`after = "edit"`: asked after each edit, before its test run (it sees the diff, no
    results); its points reach the writer's next turn even though the tests passed."""
    repo = example("calculator", tmp_path)
    (repo / ".coder").mkdir()
    (repo / ".coder" / "style.md").write_text("STYLE-RULES-MARK: comment every return.\n")
    roles = {
        "style": {
            "kind": "reviewer",
            "after": "edit",
            "model": "reviewer",
            "prompt_file": ".coder/style.md",
        }
    }
    with scripted("role_after_edit") as server:
        proc, result = solve(repo, server, daemon, roles=roles)
        assert server.steps_left == 0
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert result["status"] == "fixed" and result["iterations"] == 2
    assert result["roles"]["style"]["calls"] == 2 and result["roles"]["reviewer"]["calls"] == 2
    order = [
        (e["type"], e.get("agent"))
        for e in events(result)
        if e["type"] in ("review.verdict", "tests.run")
    ]
    assert order[:4] == [
        ("tests.run", None),
        ("review.verdict", "style"),  # before the edit's test run
        ("tests.run", None),
        ("review.verdict", "reviewer"),
    ]
    assert "# the sum" in Path(result["patch_path"]).read_text()
