"""Models and policy, pure: limits against caps, schema errors as wire error bodies."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from sandboxd.errors import InvalidRequest, LimitTooHigh
from sandboxd.models import Limits, RunRequest
from sandboxd.service.policy import apply_caps, parse_body
from sandboxd.settings import Settings


def test_a_default_above_its_cap_is_lowered() -> None:
    caps = Limits(wall_time_s=2, memory_mib=64)
    effective = apply_caps(Limits(), caps)
    assert (effective.wall_time_s, effective.memory_mib) == (2, 64)
    assert effective.pids == Limits().pids  # under its cap: untouched


def test_an_explicit_limit_above_its_cap_is_refused_naming_the_field() -> None:
    with pytest.raises(LimitTooHigh) as err:
        apply_caps(Limits(memory_mib=128), Limits(memory_mib=64))
    assert err.value.to_wire() == {
        "error": {
            "code": "limit_too_high",
            "message": "limits.memory_mib = 128 is above this daemon's maximum of 64",
            "field": "limits.memory_mib",
        }
    }
    assert err.value.http_status == 400


@pytest.mark.parametrize(
    ("raw", "code", "field"),
    [
        (b"{", "invalid_json", None),
        (b'{"cod": "x"}', "unknown_field", "cod"),
        (b'{"limits": {"wall_time_s": -1}}', "invalid_request", "limits.wall_time_s"),
        (b'{"files": [{"path": "../x"}]}', "invalid_request", "files[0].path"),
        (b'{"code": "x", "command": ["ls"]}', "invalid_request", "command"),
        (b'{"stdin": "\\ud800"}', "invalid_request", "stdin"),
        # Python's non-JSON constants: they would be stored and come back `null`
        (b'{"limits": {"wall_time_s": Infinity}}', "invalid_json", None),
        (b'{"limits": {"wall_time_s": NaN}}', "invalid_json", None),
        (b'{"limits": {"cpu_time_s": -Infinity}}', "invalid_json", None),
    ],
)
def test_bad_bodies_are_invalid_requests_naming_the_field(
    raw: bytes, code: str, field: str | None
) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_body(RunRequest, raw)
    wire = err.value.to_wire()["error"]
    assert (wire["code"], wire["field"]) == (code, field)
    assert err.value.http_status < 500


def test_a_good_body_keeps_what_was_set() -> None:
    req = parse_body(RunRequest, b'{"code": "print(1)", "limits": {"pids": 8}}')
    assert req.limits.pids == 8
    assert req.limits.model_fields_set == {"pids"}


@pytest.mark.parametrize("name", ["*.mirror.test", "mirror.test:3141", "10.0.0.0/8", "a b"])
def test_trusted_private_names_are_exact_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValidationError) as err:
        Settings(state_dir=tmp_path, egress={"trusted_private_names": [name]})
    assert "not an exact domain name" in str(err.value)
    ok = Settings(state_dir=tmp_path, egress={"trusted_private_names": ["Mirror.Test."]})
    assert ok.egress.trusted_private_names == ["mirror.test"]
