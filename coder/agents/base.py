"""A role is one kind of model call in the loop: what it is shown and what its answer means.

Each role is an object with a `name` (its key in the budget's ledger, the trace's `agent` and
the result's usage), `messages(view)` that builds its prompt from a view holding exactly what
the role may see, and `parse(text)` that turns a reply into a typed answer. The loop never
builds a prompt nor reads a reply's syntax itself, so a new role is a new module here plus the
step of the loop that asks it; the ledger, the trace and the progress lines need nothing new.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Generic, TypeVar

from coder.config import CoderConfig
from coder.model import Message

ViewT = TypeVar("ViewT")
AnswerT = TypeVar("AnswerT")


class Role(ABC, Generic[ViewT, AnswerT]):
    """The prompt builder and the reply parser of one agent; no state between calls."""

    #: The role's name: its ledger entry, its trace events' `agent`, its field in the result.
    name: ClassVar[str]

    #: The setting of CoderConfig that names the role's model.
    model_setting: ClassVar[str]

    @classmethod
    def model_name(cls, cfg: CoderConfig) -> str:
        """The model the configuration names for this role."""
        return str(getattr(cfg, cls.model_setting))

    @abstractmethod
    def messages(self, view: ViewT) -> list[Message]:
        """The chat to send, built from the view and nothing else."""

    @abstractmethod
    def parse(self, text: str) -> AnswerT:
        """The reply as a typed answer; a malformed reply is an answer too, never a raise."""
