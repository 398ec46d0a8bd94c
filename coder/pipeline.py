"""The solve's pipeline: which roles act, with which model and settings, and when, from the
configuration (`[roles.NAME]`, coder.roleconfig) over the built-in writer, reviewer and
(off) security reviewer. Code executes it in order (coder.loop); no model ever chooses who
speaks next. `coder roles` prints it (`describe`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from coder.agents import KINDS, Role
from coder.config import CoderConfig
from coder.errors import UsageError
from coder.roleconfig import BUILT_IN, DEFAULTS, CandidateConfig, RoleConfig, RoleKind

When = Literal["round", "green", "edit", "every_round"]
WHEN_TEXT: dict[str, str] = {
    "round": "every round: writes the edits",
    "green": 'after = "green": once the tests pass',
    "edit": 'after = "edit": after each edit, before its test run',
    "every_round": 'on = "every_round": after each round\'s test run',
}
PROMPT_FILE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Stage:
    """One role of the pipeline, resolved: every setting has its value."""

    name: str
    kind: RoleKind
    role: Role[Any, Any]
    model: str
    base_url: str | None
    temperature: float
    seed: int | None
    structured: bool
    budget_share: float | None
    when: When
    can_veto: bool
    prompt_file: str | None

    def line(self, n: int) -> str:
        parts = [f"{n}. {self.name} ({self.kind}): model {self.model}"]
        if self.base_url:
            parts[0] += f" at {self.base_url}"
        parts.append(f"acts {WHEN_TEXT[self.when]}")
        sampling = f"temperature {self.temperature:g}"
        if self.seed is not None:
            sampling += f", seed {self.seed}"
        parts.append(sampling)
        parts.append(f"prompt {self.prompt_file or 'built-in'}")
        if self.kind != "writer":
            parts.append("structured output " + ("on" if self.structured else "off"))
            parts.append("can veto" if self.can_veto else "cannot veto")
        if self.budget_share is not None:
            parts.append(f"budget share {self.budget_share:g}")
        return "; ".join(parts)


@dataclass(frozen=True)
class Pipeline:
    writer: Stage
    #: The checking roles that are on, in order.
    checks: tuple[Stage, ...]
    #: The roles that are configured but off.
    off: tuple[str, ...] = ()

    @property
    def stages(self) -> tuple[Stage, ...]:
        return (self.writer, *self.checks)

    def acting(self, when: When) -> list[Stage]:
        return [s for s in self.checks if s.when == when]

    def shares(self) -> dict[str, float]:
        return {s.name: s.budget_share for s in self.stages if s.budget_share is not None}

    def describe(self) -> str:
        lines = [s.line(n) for n, s in enumerate(self.stages, 1)]
        if self.off:
            lines.append("off: " + ", ".join(self.off))
        return "\n".join(lines)


def _merged(cfg: CoderConfig) -> dict[str, RoleConfig]:
    """Built-ins first (in their order), then the configured new roles in file order; a
    configured table's set fields over the built-in's."""
    out = dict(DEFAULTS)
    for name, rc in cfg.roles.items():
        base = out.get(name)
        if base is None:
            out[name] = rc
        else:
            out[name] = base.model_copy(update=rc.model_dump(exclude_unset=True))
    return out


def _prompt(root: Path, name: str, path: str | None) -> str | None:
    if path is None:
        return None
    target = root / path
    inside = root.resolve()
    if not target.resolve().is_relative_to(inside):  # nor through a symlink
        raise UsageError(f"roles.{name}.prompt_file: {path} is outside the repository")
    try:
        with target.open("rb") as fh:
            data = fh.read(PROMPT_FILE_BYTES + 1)
    except OSError as exc:
        raise UsageError(
            f"roles.{name}.prompt_file: cannot read {target}: {exc.strerror} "
            "(the path is relative to the repository)"
        ) from None
    if len(data) > PROMPT_FILE_BYTES:
        raise UsageError(f"roles.{name}.prompt_file: {target} is over 64 KiB")
    return data.decode("utf-8", errors="replace")


def build(cfg: CoderConfig, root: Path | None = None) -> Pipeline:
    """The effective pipeline; UsageError (one line) for a configuration it cannot run."""
    root = root if root is not None else cfg.repo
    stages: list[Stage] = []
    off: list[str] = []
    for name, rc in _merged(cfg).items():
        kind = rc.kind or (name if name in BUILT_IN else None)
        if kind is None:
            raise UsageError(
                f'roles.{name}: a new role needs its kind: kind = "reviewer" or "security"'
            )
        if kind == "writer" and name != "writer":
            raise UsageError(f"roles.{name}: there is one writer, [roles.writer]")
        if name in BUILT_IN and kind != name:
            raise UsageError(f"roles.{name}: a built-in role keeps its kind ({name})")
        enabled = True if rc.enabled is None else rc.enabled
        if kind == "writer":
            if not enabled:
                raise UsageError("roles.writer: the writer cannot be turned off")
            if rc.after is not None or rc.on is not None:
                raise UsageError("roles.writer: the writer acts every round; remove after/on")
        if not enabled:
            off.append(name)
            continue
        when: When = "round"
        if kind != "writer":
            when = rc.on or rc.after or "green"
        default_model = cfg.model if kind == "writer" else cfg.reviewer
        stages.append(
            Stage(
                name=name,
                kind=kind,
                role=KINDS[kind](name, _prompt(root, name, rc.prompt_file)),
                model=rc.model or default_model,
                base_url=rc.base_url or cfg.base_url,
                temperature=rc.temperature if rc.temperature is not None else 0.0,
                seed=rc.seed,
                structured=(
                    rc.structured_output
                    if rc.structured_output is not None
                    else cfg.structured_output
                ),
                budget_share=rc.budget_share,
                when=when,
                can_veto=bool(rc.can_veto) if kind != "writer" else False,
                prompt_file=rc.prompt_file,
            )
        )
    writer = stages[0]
    return Pipeline(writer, tuple(stages[1:]), tuple(off))


#: A candidate's temperature when neither it nor the writer has one above 0: identical
#: samples would make N candidates one.
DEFAULT_TEMPERATURE = 0.7


def writer_stages(cfg: CoderConfig, pipeline: Pipeline) -> list[Stage]:
    """The writer of each candidate: the pipeline's, with the candidate's settings
    (`[[candidate]]` in order); unset, seed = the writer's seed (or 0) + the candidate's
    number and temperature = the writer's, or DEFAULT_TEMPERATURE when that is 0."""
    w = pipeline.writer
    out = []
    for n in range(1, cfg.candidates + 1):
        c = cfg.candidate[n - 1] if n <= len(cfg.candidate) else CandidateConfig()
        temperature = w.temperature if w.temperature > 0 else DEFAULT_TEMPERATURE
        out.append(
            replace(
                w,
                model=c.model or w.model,
                base_url=c.base_url or w.base_url,
                temperature=c.temperature if c.temperature is not None else temperature,
                seed=c.seed if c.seed is not None else (w.seed or 0) + n,
            )
        )
    return out
