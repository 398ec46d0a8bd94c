"""The daemon's end of a kernel treats every message as hostile: forged, malformed, unrelated
or oversized messages change nothing they should not; results keep within the caps."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from jupyter_client.session import Session

from sandboxd.backends.host.kernel import (
    MAX_RESULTS,
    RESULT_OVERHEAD_BYTES,
    KernelConnection,
    _Execution,
    build_result,
    strip_ansi,
)
from sandboxd.models import ContextSpec


def _conn(tmp_path: Path) -> KernelConnection:
    return KernelConnection(tmp_path / "k", uid=0, max_message_bytes=1 << 20)


def _frames(session: Session, msg_type: str, content: object, parent: str) -> list[bytes]:
    msg = session.msg(msg_type, content)  # type: ignore[arg-type]
    msg["parent_header"] = {"msg_id": parent}
    return session.serialize(msg)


def test_forged_and_malformed_messages_are_dropped(tmp_path: Path) -> None:
    conn = _conn(tmp_path)
    forged = Session(key=b"not-the-key", signature_scheme="hmac-sha256")
    assert_raises = (ValueError, KeyError, IndexError, TypeError)
    for frames in (
        _frames(forged, "stream", {"name": "stdout", "text": "x"}, "p"),
        [b"garbage"],
        [b"<IDS|MSG>", b"", b"{", b"{}", b"{}", b"{}"],
        [],
    ):
        with pytest.raises(assert_raises):
            conn._parse(frames)
    conn._ctx.term()


def test_only_the_execution_in_progress_counts(tmp_path: Path) -> None:
    async def go() -> None:
        conn = _conn(tmp_path)
        ex = _Execution("mine", 1000, None)
        conn._current = ex
        session = conn.session
        for parent, msg_type, content in (
            ("other", "stream", {"name": "stdout", "text": "not mine"}),
            ("mine", "stream", {"name": "stdout", "text": "mine\n"}),
            ("mine", "stream", {"name": "/etc/passwd", "text": "odd stream name"}),
            ("mine", "display_data", {"data": "not a dict"}),
            ("mine", "display_data", {"data": {"m" * 300: "too long a mime", "text/plain": "ok"}}),
            ("mine", "execute_result", {"data": {"application/json": {"a": 1}}}),
            ("mine", "error", {"ename": "E", "evalue": "v", "traceback": ["\x1b[31mred\x1b[0m"]}),
        ):
            msg = conn._parse(_frames(session, msg_type, content, parent))
            assert msg is not None
            conn._dispatch("iopub", msg)
        assert ex.stdout == ["mine\n"]
        assert [(r.mime, r.data, r.is_result) for r in ex.results] == [
            ("text/plain", "ok", False),
            ("application/json", json.dumps({"a": 1}), True),
        ]
        assert ex.error is not None and ex.error.traceback == ["red"]
        assert not ex.done.is_set()  # no idle status and no reply yet
        conn._ctx.term()

    asyncio.run(go())


def test_output_keeps_within_the_cap() -> None:
    ex = _Execution("m", 10, None)
    ex.stream("stdout", "0123456789abcdef")
    ex.display({"text/plain": "x" * 11}, is_result=False)
    assert ex.stdout == ["0123456789"] and ex.over_cap.is_set()
    ex.reply, ex.idle = {"status": "ok", "execution_count": 3}, True
    result = build_result(ex, "output_limit", "output exceeded 10 bytes", 0.5)
    assert result.stdout_truncated and not result.stderr_truncated
    assert result.results == [] and "dropped" in (result.message or "")
    assert result.execution_count == 3 and result.status == "output_limit"


def test_many_empty_results_reach_the_cap() -> None:
    """Thousands of empty values cost their names and a fixed overhead each, and an execution
    keeps at most MAX_RESULTS: they cannot pile up in the daemon under a small cap."""
    ex = _Execution("m", 100_000, None)
    for _ in range(1000):
        ex.display({f"x/{i}": "" for i in range(100)}, is_result=False)
    assert ex.over_cap.is_set() and "results" in ex.truncated
    assert len(ex.results) <= min(MAX_RESULTS, 100_000 // RESULT_OVERHEAD_BYTES)
    small = _Execution("m", 1000, None)
    small.display({f"x/{i}": "" for i in range(100)}, is_result=False)
    assert small.over_cap.is_set() and len(small.results) < 1000 // RESULT_OVERHEAD_BYTES


def test_kernel_status_maps_to_the_result() -> None:
    ex = _Execution("m", 100, None)
    ex.reply = {"status": "error", "ename": "NameError", "evalue": "x", "traceback": []}
    assert build_result(ex, None, None, 0.0).error.name == "NameError"  # type: ignore[union-attr]
    ex2 = _Execution("m", 100, None)
    ex2.reply = {"status": "ok", "execution_count": "not an int"}
    result = build_result(ex2, None, None, 0.0)
    assert result.status == "ok" and result.execution_count is None
    assert strip_ansi("\x1b[1;32mgreen\x1b[0m") == "green"


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"cwd": "../up"}, "'..'"),
        ({"cwd": "/abs"}, "absolute"),
        ({"env": {"A B": "x"}}, "not valid"),
        ({"language": "bash"}, "python"),
        ({"idle_timeout_s": 0}, "greater"),
    ],
)
def test_context_spec_refuses_bad_fields(fields: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        ContextSpec.model_validate(fields)


def test_context_spec_normalises_cwd() -> None:
    assert ContextSpec(cwd="a/./b/").cwd == "a/b"
