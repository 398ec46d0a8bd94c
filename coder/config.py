"""coder's settings: defaults, then a TOML file, then OPENAI_* variables, then flags.
Budgets are on by default."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from coder.errors import UsageError
from coder.model import DEFAULT_PRICES
from sandboxd.models import Limits

CONFIG_FILES = (Path(".coder.toml"), Path.home() / ".config" / "coder" / "config.toml")


class CoderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repo: Path = Path(".")
    test: str = Field("pytest -q", min_length=1)
    task: str = "Make the failing tests pass."
    model: str = "gpt-4o-mini"
    reviewer_model: str | None = None
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    max_iterations: int = Field(8, ge=1)
    max_tokens: int = Field(400_000, ge=1)
    max_cost_usd: float = Field(2.0, gt=0)
    max_wall_s: float = Field(900.0, gt=0)
    #: The writer's READ/GREP/DEFINITION requests answered in one solve (0: none).
    max_requests: int = Field(16, ge=0)
    allow_test_edits: bool = False
    prices: dict[str, tuple[float, float]] = Field(default_factory=lambda: dict(DEFAULT_PRICES))
    cache_dir: Path | None = Path.home() / ".cache" / "coder" / "responses"
    trace_dir: Path = Path(".coder") / "traces"
    sandboxd_url: str | None = None
    sandboxd_token: str | None = None
    test_limits: Limits = Field(
        default_factory=lambda: Limits(
            wall_time_s=300, cpu_time_s=300, memory_mib=1024, pids=256, disk_mib=256
        )
    )
    retries: int = Field(5, ge=0)
    backoff_s: float = Field(0.5, ge=0)
    mode: Literal["interactive", "ci"] = "interactive"
    #: Globs (relative to the repository) of gitignored files to upload too, e.g. generated
    #: files the code imports: `src/*/_version.py`.
    include_ignored: list[str] = Field(default_factory=list)
    #: The setup step run in the sandbox before the tests; default `.coder/setup.sh` when the
    #: repository has one, else the recipe derived from what it declares.
    setup: str | None = None
    setup_timeout_s: float = Field(300.0, gt=0)
    #: Workspace room a setup gets for its virtual environment, beyond the repository's.
    setup_disk_mib: int = Field(1024, ge=0)
    #: Package index for the setup's installs; default: pip's own configuration on this host.
    index_url: str | None = None
    #: More egress rules for the installs (README "Network"): a mirror's address, the host an
    #: index serves its files from.
    setup_allow: list[str] = Field(default_factory=list)
    #: Start from the kept snapshot of the prepared environment when the daemon has one
    #: (coder.envs); false (`--fresh-env`): run the setup again, and keep the new one.
    reuse_env: bool = True
    #: The setup's installs share the tenant's download cache on the daemon (wheels fetched
    #: once per daemon); false, or a daemon that gives the tenant none: pip keeps no cache.
    download_cache: bool = True
    #: A kept environment is a cache on the daemon: it deletes it once no solve has started
    #: from it for this long, or sooner (least recently used first) to make room for a newer
    #: one within the tenant's snapshot-disk quota.
    env_ttl_s: int = Field(14 * 86400, ge=60)

    @property
    def reviewer(self) -> str:
        return self.reviewer_model or self.model

    def check_prices(self) -> None:
        """Fail closed: a cost budget needs a price for every model it spends on."""
        missing = sorted({self.model, self.reviewer} - set(self.prices))
        if missing:
            raise UsageError(
                f"no price for model(s) {', '.join(missing)}: add them under [prices] in the "
                "config (USD per million input and output tokens), so the cost budget can hold"
            )


def load_config(config_file: Path | None, flags: dict[str, Any]) -> CoderConfig:
    data: dict[str, Any] = {}
    files = [config_file] if config_file else [p for p in CONFIG_FILES if p.is_file()]
    for path in files:
        try:
            data.update(tomllib.loads(path.read_text()))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"cannot read config {path}: {exc}") from exc
    if base := os.environ.get("OPENAI_BASE_URL"):
        data.setdefault("base_url", base)
    if "prices" in data:
        data["prices"] = {**DEFAULT_PRICES, **data["prices"]}
    data.update({k: v for k, v in flags.items() if v is not None})
    try:
        return CoderConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UsageError(f"bad setting {where}: {first['msg']}") from None
