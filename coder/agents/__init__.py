"""coder's agents: one `Role` per kind of model call (coder.agents.base). `ROLES` is the one
list of them: the models built for a solve, the replies read back from a trace and the
per-role usage all follow it."""

from typing import Any

from coder.agents.base import Role
from coder.agents.reviewer import Reviewer, SecurityReviewer
from coder.agents.writer import Writer

ROLES: tuple[type[Role[Any, Any]], ...] = (Writer, Reviewer)

#: The role class of each kind a configuration may name (`kind` in `[roles.NAME]`).
KINDS: dict[str, type[Role[Any, Any]]] = {
    "writer": Writer,
    "reviewer": Reviewer,
    "security": SecurityReviewer,
}

__all__ = ["KINDS", "ROLES", "Reviewer", "Role", "SecurityReviewer", "Writer"]
