"""Command-line mistakes in both commands: one line that says what to do, never a usage block."""

from __future__ import annotations

import pytest

from coder.cli import main as coder_main
from sandboxd.cli import main as sandboxd_main


@pytest.mark.parametrize(
    ("main", "argv", "status"),
    [
        ("sandboxd", ["run"], 125),
        ("sandboxd", ["run", "x.py", "--timeout", "abc"], 125),
        ("sandboxd", ["frob"], 125),
        ("coder", ["solve", "--max-iterations", "x"], 2),
        ("coder", ["envs"], 2),
    ],
)
def test_a_command_line_mistake_is_one_line(
    main: str, argv: list[str], status: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """No usage block: one line naming the mistake and where help is, and the command's
    usage status (125 for `sandboxd`, whose `run` exits with the program's own codes)."""
    entry = sandboxd_main if main == "sandboxd" else coder_main
    with pytest.raises(SystemExit) as stopped:
        entry(argv)
    err = capsys.readouterr().err
    assert stopped.value.code == status
    assert err.count("\n") == 1 and err.startswith(f"{main}") and "--help`" in err, err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["mcp", "--url", "localhost:8765"], "is not a URL"),
        # nothing listens on port 9 of loopback (discard): unreachable, said before serving
        (["mcp", "--url", "http://127.0.0.1:9", "--token", "t"], "cannot reach sandboxd"),
    ],
)
def test_sandboxd_mcp_refuses_in_one_line_before_serving(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sandboxd_main(argv) == 125
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and says in captured.err, captured.err
    assert captured.out == ""  # stdout is the protocol's
