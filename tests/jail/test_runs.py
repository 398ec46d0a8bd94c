"""One-shot runs through the real daemon: languages, files, stdin, env, exit codes."""

from __future__ import annotations

import base64
import json
import urllib.request

import pytest

from sandboxd.client import SyncClient
from tests.daemon import Daemon

pytestmark = pytest.mark.usefixtures("no_leftovers")


@pytest.fixture
def client(backend_client: SyncClient) -> SyncClient:
    return backend_client


def test_readme_curl_hello(daemon: Daemon) -> None:
    body = json.dumps({"language": "python", "code": 'print("hello")'}).encode()
    req = daemon.request("/v1/runs", data=body)
    req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as resp:
        result = json.loads(resp.read())
    assert resp.status == 200
    assert result["status"] == "ok"
    assert result["exit_code"] == 0
    assert result["stdout"] == "hello\n"
    assert result["id"].startswith("run_")


@pytest.mark.parametrize(
    ("language", "code"),
    [
        ("python", 'import sys; print("hello from", sys.implementation.name)'),
        ("bash", 'echo "hello from $0"'),
        ("node", 'console.log("hello from node " + typeof process.version)'),
    ],
)
def test_hello_in_each_language(client: SyncClient, language: str, code: str) -> None:
    result = client.run(language=language, code=code)
    assert result.status == "ok", result
    assert result.stdout.startswith("hello from")
    assert result.stderr == ""
    assert result.usage.wall_time_s > 0
    if client.backend == "nsjail":  # type: ignore[attr-defined]
        # Docker removes a container's cgroup when it exits: a 20 ms run may leave no sample.
        assert result.usage.peak_memory_mib > 0


def test_files_in_and_collected_out(client: SyncClient) -> None:
    payload = bytes(range(256))
    result = client.run(
        language="bash",
        code="cat lib/data.txt; ./tool.sh; mkdir -p out/deep; "
        "sha256sum blob.bin | cut -c1-16 > out/sum.txt; echo made > out/deep/x.log",
        files=[
            {"path": "lib/data.txt", "content": "data line\n"},
            {"path": "./tool.sh", "content": "#!/bin/bash\necho tool ran\n", "executable": True},
            {
                "path": "blob.bin",
                "content": base64.b64encode(payload).decode(),
                "encoding": "base64",
            },
        ],
        collect=["out/**/*", "lib/*.txt", "nothing-matches-*"],
    )
    assert result.status == "ok", result
    assert result.stdout == "data line\ntool ran\n"
    got = {f.path: base64.b64decode(f.content) for f in result.files}
    assert set(got) == {"out/sum.txt", "out/deep/x.log", "lib/data.txt"}
    import hashlib

    assert got["out/sum.txt"].decode().strip() == hashlib.sha256(payload).hexdigest()[:16]
    assert got["out/deep/x.log"] == b"made\n"
    assert all(f.size == len(got[f.path]) for f in result.files)


def test_collect_single_star_stays_in_one_directory(client: SyncClient) -> None:
    result = client.run(
        language="bash", code="mkdir d; echo a > a.txt; echo b > d/b.txt", collect=["*.txt"]
    )
    assert [f.path for f in result.files] == ["a.txt"]


def test_collect_skips_symlinks_and_specials(client: SyncClient) -> None:
    result = client.run(
        language="bash",
        code="ln -s /etc/passwd link.txt; mkfifo fifo.txt; echo real > real.txt",
        collect=["*.txt"],
    )
    assert result.status == "ok", result
    assert [f.path for f in result.files] == ["real.txt"]
    assert result.message is not None and "link.txt" in result.message


def test_stdin_is_passed(client: SyncClient) -> None:
    result = client.run(code="import sys; print(sys.stdin.read().upper())", stdin="abc\ndef")
    assert result.stdout == "ABC\nDEF\n"


def test_no_stdin_reads_eof(client: SyncClient) -> None:
    result = client.run(code="import sys; print(repr(sys.stdin.read()))")
    assert result.stdout == "''\n"


def test_large_stdin_unread_does_not_hang(client: SyncClient) -> None:
    result = client.run(code="print('ignored stdin')", stdin="x" * 5_000_000)
    assert result.status == "ok"
    assert result.stdout == "ignored stdin\n"


def test_env_is_only_what_was_given(client: SyncClient) -> None:
    tricky = 'quote " backslash \\ newline \n unicode é ✓ $HOME `id`'
    result = client.run(
        code="import os, json; print(json.dumps(dict(os.environ)))",
        env={"GIVEN": "yes", "TRICKY": tricky},
    )
    env = json.loads(result.stdout)
    assert env == {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": "/workspace",
        "LANG": "C.UTF-8",
        "GIVEN": "yes",
        "TRICKY": tricky,
    }
    assert "daemon-secret-value" not in result.stdout


def test_command_argv_is_not_shell_interpreted(client: SyncClient) -> None:
    result = client.run(
        command=["python3", "-c", "import sys; print(sys.argv[1:])", "$(id)", "a b", ";ls"]
    )
    assert result.status == "ok", result
    assert result.stdout == "['$(id)', 'a b', ';ls']\n"


@pytest.mark.parametrize("code", [0, 1, 3, 255])
def test_exit_codes(client: SyncClient, code: int) -> None:
    result = client.run(language="bash", code=f"echo out; echo err >&2; exit {code}")
    assert result.exit_code == code
    assert result.status == ("ok" if code == 0 else "failed")
    assert (result.stdout, result.stderr) == ("out\n", "err\n")


def test_death_by_signal(client: SyncClient) -> None:
    result = client.run(code="import ctypes; ctypes.string_at(0)")
    assert result.status == "killed"
    assert result.signal == "SIGSEGV"
    assert result.exit_code is None


def test_missing_program_is_a_failed_run(client: SyncClient) -> None:
    result = client.run(command=["/no/such/program"])
    assert result.status == "failed"
    assert result.exit_code == 127
    assert result.message is not None and "/no/such/program" in result.message


def test_invalid_utf8_output_is_replaced(client: SyncClient) -> None:
    result = client.run(code="import sys; sys.stdout.buffer.write(b'ok \\xff\\xfe end')")
    assert result.stdout == "ok \ufffd\ufffd end"
