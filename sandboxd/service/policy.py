"""Request validation: JSON parsing, schema errors turned into wire errors, limits against caps."""

from __future__ import annotations

import hashlib
import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

# format_loc and validation_error live in errors (clients need them without the daemon);
# re-exported here for the daemon's callers.
from sandboxd.errors import InvalidRequest, LimitTooHigh
from sandboxd.errors import format_loc as format_loc
from sandboxd.errors import validation_error as validation_error
from sandboxd.models import Limits, NetworkPolicy, RunRequest
from sandboxd.settings import EgressSettings

M = TypeVar("M", bound=BaseModel)


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _lone_surrogate(data: Any) -> tuple[int | str, ...] | None:
    """Where a string of `data` holds a lone UTF-16 surrogate (JSON allows `"\\ud800"`;
    it cannot be encoded, so no file, stdin or digest could be made of it); None if none."""
    stack: list[tuple[tuple[int | str, ...], Any]] = [((), data)]
    while stack:  # iterative: the depth is whatever the client sent
        loc, item = stack.pop()
        if isinstance(item, str):
            if not _encodable(item):
                return loc
        elif isinstance(item, dict):
            for key, value in item.items():
                if not _encodable(key):
                    return loc  # named by where it is: the key itself cannot be shown
                stack.append(((*loc, key), value))
        elif isinstance(item, list):
            stack += [((*loc, i), v) for i, v in enumerate(item)]
    return None


def _not_json(name: str) -> Any:
    """`NaN`, `Infinity` and `-Infinity` are Python's, not JSON's: a value that cannot be
    stored and read back (it would come back `null`) is refused here."""
    raise json.JSONDecodeError(f"{name} is not a JSON value", name, 0)


def parse_body(model: type[M], raw: bytes) -> M:
    """Parse a JSON request body into `model`, or raise an InvalidRequest that says why.

    The body is required: an empty one is refused (send `{}` for every default)."""
    if not raw.strip():
        raise InvalidRequest(
            "request body is empty: send a JSON object (`{}` for every default)",
            code="invalid_json",
        )
    try:
        data: Any = json.loads(raw, parse_constant=_not_json)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        message = f"request body is not valid JSON: {exc}"
        raise InvalidRequest(message, code="invalid_json") from None
    except RecursionError:
        raise InvalidRequest("request body is nested too deeply", code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object", code="invalid_json")
    if (loc := _lone_surrogate(data)) is not None:
        field = format_loc(loc)
        raise InvalidRequest(
            f"{field or 'request body'}: text holds a lone UTF-16 surrogate (not valid Unicode)",
            field=field,
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def request_digest(request: RunRequest) -> dict[str, Any]:
    """What the audit trail keeps of a run request: hashes and shapes, never secrets."""
    return {
        "language": request.language,
        "code_sha256": _sha256(request.code.encode()),
        "files": [
            {"path": f.path, "sha256": _sha256(f.data()), "executable": f.executable}
            for f in request.files
        ],
        "command_sha256": _sha256(json.dumps(request.command).encode())
        if request.command is not None
        else None,
        "stdin_sha256": _sha256(request.stdin.encode()) if request.stdin is not None else None,
        "env_names": sorted(request.env),
        "limits": request.limits.model_dump(),
        "network": request.network.model_dump(),
        "download_cache": request.download_cache,
        "collect": request.collect,
    }


def check_network(network: NetworkPolicy, settings: EgressSettings) -> None:
    """Refuse allowlists the daemon's settings forbid or cap."""
    if network.mode == "allowlist" and not settings.allowlists:
        raise InvalidRequest(
            "this daemon allows no egress: network mode must be 'none'", field="network.mode"
        )
    if len(network.allow) > settings.max_rules:
        raise LimitTooHigh(
            f"network.allow has {len(network.allow)} rules; this daemon allows "
            f"{settings.max_rules}",
            field="network.allow",
        )


def apply_caps(limits: Limits, caps: Limits) -> Limits:
    """Effective limits: a limit the caller set above its cap is refused (never silently
    lowered); a default the caller left alone is lowered to the cap."""
    effective = limits.model_copy()
    for name in Limits.model_fields:
        asked, cap = getattr(limits, name), getattr(caps, name)
        if asked <= cap:
            continue
        if name in limits.model_fields_set:
            raise LimitTooHigh(
                f"limits.{name} = {asked} is above this daemon's maximum of {cap}",
                field=f"limits.{name}",
            )
        setattr(effective, name, cap)
    return effective
