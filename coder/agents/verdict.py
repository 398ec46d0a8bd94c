"""The typed reply of a checking role: `{"verdict": "approve" | "revise" | "veto", "points":
[...]}`, validated by pydantic. The same schema is what an endpoint with structured output is
asked for (`response_format`); a reply that starts with the verdict word on its own line (the
plain-text form of earlier versions) is read as that verdict. Anything else is invalid: the
loop asks once for a repair, and then stops (`invalid_reply`), never guessing a verdict."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from coder.agents.base import ReplyInvalid


class VerdictReply(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verdict: Literal["approve", "revise", "veto"]
    points: list[str]


SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "verdict": {"type": "string", "enum": ["approve", "revise", "veto"]},
        "points": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["verdict", "points"],
    "additionalProperties": False,
}
RESPONSE_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {"name": "verdict", "strict": True, "schema": SCHEMA},
}
FORMAT = (
    'Answer with one JSON object and nothing else: {"verdict": "approve" | "revise" | "veto", '
    '"points": ["...", ...]} (points: what must change; empty when you approve).'
)
_FENCE = re.compile(r"^```(?:json)?\s*\n(.*?)\n```\s*$", re.DOTALL)
_WORDS = {"APPROVE": "approve", "REVISE": "revise", "VETO": "veto"}


@dataclass(frozen=True)
class Verdict:
    word: Literal["APPROVE", "REVISE", "VETO"]
    points: str
    items: tuple[str, ...] = ()


def _first_word(text: str) -> VerdictReply | None:
    first, _, rest = text.partition("\n")
    word = first.strip().strip("*#:. ").upper()
    for w, v in _WORDS.items():
        if word.startswith(w):
            lines = [x.strip().lstrip("-* ").strip() for x in rest.splitlines()]
            return VerdictReply.model_validate({"verdict": v, "points": [x for x in lines if x]})
    return None


def parse_verdict(text: str) -> VerdictReply:
    """The verdict in `text`; ReplyInvalid says why there is none."""
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    if body.startswith("{"):
        try:
            return VerdictReply.model_validate(json.loads(body))
        except ValueError as exc:  # ValidationError is a ValueError, as is JSONDecodeError
            if isinstance(exc, ValidationError):
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "the object"
                raise ReplyInvalid(f"{where}: {first['msg']}") from None
            raise ReplyInvalid(f"not JSON: {exc}") from None
    found = _first_word(body)
    if found is None:
        raise ReplyInvalid(
            'no verdict: answer with the JSON object {"verdict": ..., "points": [...]}'
        )
    return found


def verdict(text: str) -> Verdict:
    reply = parse_verdict(text)
    word: Literal["APPROVE", "REVISE", "VETO"] = "APPROVE"
    if reply.verdict == "revise":
        word = "REVISE"
    elif reply.verdict == "veto":
        word = "VETO"
    points = "\n".join(f"- {p}" for p in reply.points)
    if word != "APPROVE" and not points:
        points = f"{reply.verdict} (no points given)"
    return Verdict(word, points, tuple(reply.points))
