"""The CLIs as a newcomer meets them: every mistake is one line saying what to do, a missing
state dir is refused (and not created), every option has a help line, and the quickstart names
the token file it reads."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coder.cli import build_parser as coder_parser
from sandboxd.cli.commands import build_parser as sandboxd_parser
from tests.daemon import Daemon, free_port

REPO = Path(__file__).resolve().parents[2]


def sandboxd(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOXD_")}
    return subprocess.run(
        [sys.executable, "-m", "sandboxd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **env},
        stdin=subprocess.DEVNULL,
    )


def one_line(proc: subprocess.CompletedProcess[str], *says: str) -> None:
    assert proc.returncode != 0, proc.stdout
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for text in says:
        assert text in proc.stderr, proc.stderr


@pytest.mark.parametrize("command", [["token", "list"], ["audit", "verify"]])
def test_a_missing_state_dir_is_an_error_and_is_not_created(
    tmp_path: Path, command: list[str]
) -> None:
    missing = tmp_path / "no-such-state"
    proc = sandboxd(*command, "--state-dir", str(missing))
    one_line(proc, str(missing), "--state-dir", "sandboxd serve")
    assert not missing.exists()
    empty = tmp_path / "empty"  # a directory, but no daemon ever ran there
    empty.mkdir()
    one_line(sandboxd(*command, "--state-dir", str(empty)), str(empty))
    assert list(empty.iterdir()) == []


def test_env_without_equals_says_key_value(tmp_path: Path) -> None:
    script = tmp_path / "x.py"
    script.write_text("print(1)\n")
    proc = sandboxd("run", str(script), "--env", "FOO", "--url", f"http://127.0.0.1:{free_port()}")
    one_line(proc, "--env FOO", "KEY=VALUE")


@pytest.mark.parametrize(("flag", "env"), [(["--url", "foo"], {}), ([], {"SANDBOXD_URL": "foo"})])
def test_a_url_that_is_not_one_is_refused(
    tmp_path: Path, flag: list[str], env: dict[str, str]
) -> None:
    script = tmp_path / "x.py"
    script.write_text("print(1)\n")
    one_line(sandboxd("run", str(script), *flag, **env), "foo", "not a URL", "http://")


def test_images_export_of_an_unknown_image_names_those_that_exist(tmp_path: Path) -> None:
    dest = tmp_path / "root"
    one_line(sandboxd("images", "export", "nosuch", str(dest)), "nosuch", "python", "images list")
    assert not dest.exists()


def test_a_missing_token_names_the_file_looked_for(daemon: Daemon, tmp_path: Path) -> None:
    script = tmp_path / "x.py"
    script.write_text("print(1)\n")
    elsewhere = tmp_path / "not-the-state-dir"
    proc = sandboxd("run", str(script), SANDBOXD_URL=daemon.url, SANDBOXD_STATE_DIR=str(elsewhere))
    one_line(proc, str(elsewhere / "admin.token"), "--token", "SANDBOXD_TOKEN", "token create")


def test_a_signal_death_names_the_signal(daemon: Daemon, tmp_path: Path) -> None:
    script = tmp_path / "abort.py"
    script.write_text("import os\nos.abort()\n")
    proc = sandboxd("run", str(script), SANDBOXD_URL=daemon.url, SANDBOXD_TOKEN=daemon.token)
    assert proc.returncode > 128
    name = signal.Signals(proc.returncode - 128).name
    assert proc.stderr.strip() == (
        f"sandboxd: killed: the program was killed by {name}, exit {proc.returncode}"
    )


def _subparsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(parser.prog, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, child in action.choices.items():
                assert helps.get(name), f"{child.prog} has no help line"
                found += _subparsers(child)
    return found


@pytest.mark.parametrize("build", [sandboxd_parser, coder_parser])
def test_every_option_of_every_command_has_help(build: object) -> None:
    assert callable(build)
    parsers = _subparsers(build())
    assert len(parsers) >= 4
    missing = [
        f"{prog} {action.option_strings or action.dest}"
        for prog, parser in parsers
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction)
        and not (action.help and action.help.strip())
    ]
    assert missing == []


@pytest.mark.parametrize("cli", ["sandboxd", "coder"])
def test_help_describes_the_command_in_whole_sentences(cli: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", cli, "--help"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0
    description = proc.stdout.split("\n\n")[1]
    assert description.rstrip().endswith("."), description
    assert "Exit codes" in proc.stdout


def test_quickstart_prints_the_token_path_it_reads(workdir: Path) -> None:
    state = workdir / "quick-state"
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SANDBOXD_")},
        "SANDBOXD_STATE_DIR": str(state),
        "SANDBOXD_PORT": str(port),
        "SANDBOXD_CGROUP_PARENT": f"sandboxd-test-{os.getpid()}-quickstart",
        "PYTHONPATH": str(REPO),
    }
    proc = subprocess.Popen(
        [str(REPO / "scripts" / "quickstart.sh")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "sandboxd is serving" in line:
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    shown = next((x for x in lines if x.startswith("$ curl")), "")
    assert f"$(cat {state}/admin.token)" in shown, "".join(lines)
    assert "/var/lib/sandboxd" not in shown
    assert any('"stdout":"hello\\n"' in x for x in lines), "".join(lines)
