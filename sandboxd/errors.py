"""Errors of sandboxd, and the fixed table of wire error codes mapped to their classes.

A failure of the *untrusted code* (timeout, OOM, non-zero exit) is never an exception: it is a
`RunResult.status`. These classes describe failures of the *request* or of the *service*.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import ValidationError


class SandboxdError(Exception):
    """Base error of the sandboxd package; carries what goes on the wire."""

    code: ClassVar[str] = "internal"
    http_status: ClassVar[int] = 500

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        code: str | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code  # type: ignore[misc]
        if http_status is not None:
            self.http_status = http_status  # type: ignore[misc]

    def to_wire(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "field": self.field}}


class InvalidRequest(SandboxdError):
    """The request is malformed or asks for something the daemon does not allow."""

    code = "invalid_request"
    http_status = 400


class MethodNotAllowed(InvalidRequest):
    """The route exists but not with this HTTP method; `allow` lists those it has (the
    answer's `Allow` header, which every 405 carries)."""

    code = "method_not_allowed"
    http_status = 405

    def __init__(self, message: str, *, allow: str = "", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.allow = allow


class LimitTooHigh(InvalidRequest):
    """A requested limit is above what the daemon's settings allow."""

    code = "limit_too_high"


class PayloadTooLarge(InvalidRequest):
    """The request body, or the files it carries, exceed a size cap."""

    code = "payload_too_large"
    http_status = 413


class Unauthorized(SandboxdError):
    """No valid bearer token: missing, malformed, unknown or revoked."""

    code = "unauthorized"
    http_status = 401


class Forbidden(SandboxdError):
    """The token is valid but lacks the scope this call needs."""

    code = "forbidden"
    http_status = 403


class QuotaExceeded(SandboxdError):
    """The tenant is at one of its quotas (concurrent runs, sandboxes, disk)."""

    code = "quota_exceeded"
    http_status = 429


class Conflict(SandboxdError):
    """The object is not in a state that allows this (e.g. cancelling a finished run)."""

    code = "conflict"
    http_status = 409


class NotFound(SandboxdError):
    """No such route or object (also used instead of 403 so that existence does not leak)."""

    code = "not_found"
    http_status = 404


class Overloaded(SandboxdError):
    """All run slots are busy and the queue is full; retry after `retry_after_s`."""

    code = "overloaded"
    http_status = 503

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class BackendUnavailable(SandboxdError):
    """The host cannot provide the isolation that was asked for; nothing was run."""

    code = "backend_unavailable"
    http_status = 503


class DaemonUnreachable(SandboxdError):
    """Client side only: the daemon could not be reached or answered garbage."""

    code = "daemon_unreachable"
    http_status = 0


#: Wire code -> class. Codes are stable API; the client maps them back to these classes.
WIRE_CODES: dict[str, type[SandboxdError]] = {
    "internal": SandboxdError,
    "invalid_json": InvalidRequest,
    "invalid_request": InvalidRequest,
    "unknown_field": InvalidRequest,
    "method_not_allowed": MethodNotAllowed,
    "limit_too_high": LimitTooHigh,
    "payload_too_large": PayloadTooLarge,
    "not_found": NotFound,
    "conflict": Conflict,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "quota_exceeded": QuotaExceeded,
    "overloaded": Overloaded,
    "backend_unavailable": BackendUnavailable,
    "daemon_unreachable": DaemonUnreachable,
}


def error_from_wire(status: int, body: Any, *, retry_after_s: int = 1) -> SandboxdError:
    """Rebuild the exception a daemon answer describes (unknown codes become the base class)."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return SandboxdError(f"daemon answered HTTP {status} without an error body")
    code = str(err.get("code", "internal"))
    message = str(err.get("message", ""))
    field = err.get("field")
    cls = WIRE_CODES.get(code, SandboxdError)
    if cls is Overloaded:
        return Overloaded(message, retry_after_s=retry_after_s)
    field_name = field if isinstance(field, str) else None
    return cls(message, field=field_name, code=code, http_status=status)


def format_loc(loc: tuple[int | str, ...]) -> str | None:
    """('files', 0, 'path') -> 'files[0].path'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or None


def validation_error(exc: ValidationError) -> InvalidRequest:
    """The first schema error as an InvalidRequest naming its field."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    field = format_loc(tuple(first["loc"]))
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    if first["type"] == "extra_forbidden":
        return InvalidRequest(f"unknown field {field!r}{more}", field=field, code="unknown_field")
    msg = first["msg"].removeprefix("Value error, ")
    where = f"{field}: " if field else ""
    return InvalidRequest(f"{where}{msg}{more}", field=field)
