"""A role is one kind of model call in the loop: what it is shown and what its answer means.

Each role is an object with a `name` (its key in the budget's ledger, the trace's `agent` and
the result's usage), `messages(view)` that builds its prompt from a view holding exactly what
the role may see, and `parse(text)` that turns a reply into a typed answer. The loop never
builds a prompt nor reads a reply's syntax itself, so a new role is a new module here plus the
step of the loop that asks it; the ledger, the trace and the progress lines need nothing new.

A role whose answer is a typed message (a verdict) has a `response_format`: the JSON schema
asked of an endpoint with structured output. Its `parse` raises `ReplyInvalid` on a reply that
does not validate, and the loop asks once for a repair with the error (coder.loop).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Generic, TypeVar

from coder.config import CoderConfig
from coder.model import Message

ViewT = TypeVar("ViewT")
AnswerT = TypeVar("AnswerT")


class ReplyInvalid(ValueError):
    """A reply that is not the typed message the role asked for; the text says why."""


class Role(ABC, Generic[ViewT, AnswerT]):
    """The prompt builder and the reply parser of one agent; no state between calls."""

    #: The role's name: its ledger entry, its trace events' `agent`, its field in the result.
    #: The class's is the built-in role's; a configured role (`[roles.NAME]`) has its own.
    name: str

    #: The setting of CoderConfig that names the role's model.
    model_setting: ClassVar[str]

    #: The structured-output request (`response_format`) of a typed reply; None: free text.
    response_format: ClassVar[dict[str, Any] | None] = None

    def __init__(self, name: str | None = None, instructions: str | None = None) -> None:
        if name is not None:
            self.name = name
        #: The configured prompt (`prompt_file`), None for the built-in one.
        self.instructions = instructions

    @classmethod
    def model_name(cls, cfg: CoderConfig) -> str:
        """The model the configuration names for this role."""
        return str(getattr(cfg, cls.model_setting))

    @abstractmethod
    def messages(self, view: ViewT) -> list[Message]:
        """The chat to send, built from the view and nothing else."""

    @abstractmethod
    def parse(self, text: str) -> AnswerT:
        """The reply as a typed answer. A role with free-text replies never raises (a
        malformed reply is an answer too); a typed one raises ReplyInvalid."""

    def repair(self, error: str) -> str:
        """What to say to get a valid reply after `error` (a typed role only)."""
        return f"Your reply was not valid: {error}. Answer again, in the form asked for."
