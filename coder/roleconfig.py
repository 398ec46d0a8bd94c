"""The settings of a role (`[roles.NAME]` in `.coder.toml`) and of a candidate
(`[[candidate]]`): plain data, validated here, turned into the solve's pipeline by
`coder.pipeline`.

When a role acts is a word from a small fixed vocabulary, not a model's choice: the writer acts
every round; a checking role acts `after = "green"` (once the tests pass: all must approve for
a fix), `after = "edit"` (after every round that changed files, before its test run: it sees
the diff only) or `on = "every_round"` (after every round's test run: the diff and the
results). Code runs them in the order the configuration lists them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: The kinds of role coder has code for: what a role is shown and what its reply means.
RoleKind = Literal["writer", "reviewer", "security"]
#: The built-in roles by name, in pipeline order.
BUILT_IN: tuple[RoleKind, ...] = ("writer", "reviewer", "security")


class RoleConfig(BaseModel):
    """One `[roles.NAME]` table. Unset fields take the built-in role's (or the top-level
    settings') value."""

    model_config = ConfigDict(extra="forbid")

    #: What the role does; a new name needs one (`reviewer` or `security`), a built-in name
    #: is its own kind.
    kind: RoleKind | None = None
    enabled: bool | None = None
    model: str | None = Field(None, min_length=1)
    base_url: str | None = None
    #: Instructions replacing the built-in ones (a checking role's reply format is added by
    #: coder); for the writer, added to its own. Relative to the repository.
    prompt_file: str | None = Field(None, min_length=1)
    temperature: float | None = Field(None, ge=0, le=2)
    seed: int | None = None
    #: The share of the token and cost budgets this role may spend (0 < share <= 1).
    budget_share: float | None = Field(None, gt=0, le=1)
    after: Literal["green", "edit"] | None = None
    on: Literal["every_round"] | None = None
    #: Ask the endpoint for JSON-schema structured output (`response_format`); off: the
    #: reply is parsed and validated, with one repair request.
    structured_output: bool | None = None
    #: A `veto` verdict stops the solve (`vetoed`); without it a veto counts as `revise`.
    can_veto: bool | None = None

    @model_validator(mode="after")
    def _one_trigger(self) -> RoleConfig:
        if self.after is not None and self.on is not None:
            raise ValueError("give either after or on, not both")
        return self


class CandidateConfig(BaseModel):
    """One `[[candidate]]` table: the writer's sampling settings for that candidate."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, min_length=1)
    base_url: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    seed: int | None = None


#: The built-in roles' settings besides their models (those come from `model` and
#: `reviewer_model`).
DEFAULTS: dict[str, RoleConfig] = {
    "writer": RoleConfig(kind="writer", enabled=True),
    "reviewer": RoleConfig(kind="reviewer", enabled=True, after="green", can_veto=False),
    "security": RoleConfig(kind="security", enabled=False, after="green", can_veto=True),
}
