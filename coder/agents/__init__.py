"""coder's agents: one `Role` per kind of model call (coder.agents.base). `ROLES` is the one
list of them: the models built for a solve, the replies read back from a trace and the
per-role usage all follow it."""

from typing import Any

from coder.agents.base import Role
from coder.agents.reviewer import Reviewer
from coder.agents.writer import Writer

ROLES: tuple[type[Role[Any, Any]], ...] = (Writer, Reviewer)

__all__ = ["ROLES", "Reviewer", "Role", "Writer"]
