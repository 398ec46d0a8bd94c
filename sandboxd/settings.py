"""Daemon settings: defaults here, then a TOML file, then `SANDBOXD_*` environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from sandboxd.backends.nsjail.settings import NsjailConfig
from sandboxd.backends.registry import TYPES, BackendConfig
from sandboxd.models import BACKEND_NAME, Limits
from sandboxd.netrules import trusted_name

#: Settings of releases before `backends`, and where they went.
_MOVED = {
    "backend": "`[backend]` is now `[backends.nsjail]` (its cgroup_parent and uid_base are "
    "top-level settings)",
    "docker": "`[docker]` is now `[backends.docker]` (present means enabled)",
}

#: Host uids one daemon owns: run slots, warm slots, Docker slots and persistent sandboxes.
UID_SPAN = 100_000
#: The owner on disk of the daemon's download caches' files: no run or sandbox runs as it.
DOWNLOAD_CACHE_UID_OFFSET = UID_SPAN - 1


@dataclass(frozen=True)
class DaemonIdentity:
    """What names this daemon's things on the host."""

    id: str
    uid_base: int
    cgroup_root: str

    @property
    def cgroup_parent(self) -> str:
        """The daemon's own cgroup, below the shared root: the only one it reaps."""
        return f"{self.cgroup_root}/{self.id}"


class MaxLimits(Limits):
    """The most a request may ask for; a field left out of the config keeps this default."""

    wall_time_s: float = Field(300.0, gt=0)
    cpu_time_s: float = Field(300.0, gt=0)
    memory_mib: int = Field(4096, ge=16)
    pids: int = Field(1024, ge=1)
    output_bytes: int = Field(16 * 1024 * 1024, ge=1)
    file_size_mib: int = Field(1024, ge=1)
    disk_mib: int = Field(4096, ge=1)


class TenantQuota(BaseModel):
    """What one tenant may hold at once."""

    model_config = ConfigDict(extra="forbid")

    max_concurrent_runs: int | None = Field(
        None, ge=1, description="Runs in progress or queued at once; None: the daemon's caps."
    )
    max_sandboxes: int = Field(16, ge=0)
    max_disk_mib: int = Field(16384, ge=0, description="Sum of its sandboxes' disk_mib.")
    max_snapshot_disk_mib: int = Field(
        16384, ge=0, description="Disk its snapshots hold, in MiB (allocated, rounded up)."
    )
    max_solves: int = Field(
        200, ge=1, description="coder solves it keeps (the oldest ended ones go first)."
    )
    download_cache_mib: int = Field(
        2048,
        ge=0,
        description="Size of its download cache (pip's and others', shared by its runs that "
        "ask for it with `download_cache`); 0: it has none.",
    )


class EgressSettings(BaseModel):
    """Per-run egress allowlists (through the daemon's proxy)."""

    model_config = ConfigDict(extra="forbid")

    allowlists: bool = Field(True, description="False: only network mode 'none' is allowed.")
    max_rules: int = Field(32, ge=1, le=256)
    hosts: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Names the proxy resolves itself (like /etc/hosts), before the system's DNS.",
    )
    trusted_private_names: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Exact names (a local package mirror) that may resolve to a private "
        "address for runs whose allowlist names them; every other name that resolves "
        "privately stays refused, and none may lead to loopback, link-local or metadata.",
    )

    @field_validator("trusted_private_names")
    @classmethod
    def _exact_names(cls, names: list[str]) -> list[str]:
        return [trusted_name(n) for n in names]


def _default_concurrency() -> int:
    return max(4, 4 * (os.cpu_count() or 1))


class Settings(BaseSettings):
    """Everything the daemon can be told. Limits in requests are capped by `max_limits`."""

    model_config = SettingsConfigDict(
        env_prefix="SANDBOXD_", env_nested_delimiter="__", extra="forbid"
    )

    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    state_dir: Path = Path("/var/lib/sandboxd")
    lock_dir: Path = Field(
        Path("/var/lib/sandboxd-uids"),
        description="Host-wide: the files by which daemons reserve their uid ranges (shared "
        "by every daemon on the host; each one locks and rewrites only its own).",
    )
    max_concurrent_runs: int = Field(default_factory=_default_concurrency, ge=1, le=1000)
    max_queued_runs: int = Field(64, ge=0)
    max_request_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    max_collect_bytes: int = Field(16 * 1024 * 1024, ge=0)
    max_collect_files: int = Field(256, ge=0)
    max_limits: MaxLimits = Field(default_factory=MaxLimits)
    egress: EgressSettings = Field(default_factory=EgressSettings)
    tenant_quota: TenantQuota = Field(default_factory=TenantQuota)
    tenants: dict[str, TenantQuota] = Field(
        default_factory=dict, description="Quotas of named tenants, instead of tenant_quota."
    )
    max_sandbox_ttl_s: int = Field(7 * 86400, ge=1)
    max_snapshot_ttl_s: int = Field(
        90 * 86400, ge=1, description="The most a cache snapshot's ttl_s may be."
    )
    sandbox_sweep_s: float = Field(
        10.0, gt=0, description="How often idle sandboxes and cache snapshots expire."
    )
    max_file_bytes: int = Field(64 * 1024 * 1024, ge=1, description="File API size cap.")
    shutdown_grace_s: float = Field(10.0, ge=0, description="Runs get this long on SIGTERM.")
    otlp_endpoint: str | None = Field(
        None, description="OTLP/HTTP traces endpoint (e.g. http://127.0.0.1:4318/v1/traces)."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    cgroup_parent: str = Field(
        "sandboxd",
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="The cgroup shared by the host's daemons; each one uses (and reaps) only "
        "`<cgroup_parent>/<its id>`, the id kept in its state dir.",
    )
    uid_base: int | None = Field(
        None,
        ge=1000,
        le=2**31 - 2 - UID_SPAN,
        description=f"First of the {UID_SPAN} host uids this daemon's jails run as (unmapped); "
        "default: the first range from 200000 that no other daemon holds, chosen once and kept "
        "in the state dir. Two daemons on a host never share one.",
    )
    backends: dict[Annotated[str, Field(pattern=BACKEND_NAME)], BackendConfig] = Field(
        default_factory=lambda: dict[str, BackendConfig](nsjail=NsjailConfig()),
        description="The backends runs can ask for, by name, each with its `type` "
        f"({', '.join(TYPES)}; a name that is a type may leave `type` out). At most one "
        "backend of each type.",
    )
    default_backend: str = Field("nsjail", description="The backend of requests that name none.")

    _identity: DaemonIdentity | None = PrivateAttr(None)

    @model_validator(mode="before")
    @classmethod
    def _moved_and_typed(cls, data: Any) -> Any:
        """Name what moved; give a backend named after a type that type, when it says none."""
        if not isinstance(data, dict):
            return data
        for old, where in _MOVED.items():
            if old in data:
                raise ValueError(where)
        backends = data.get("backends")
        if isinstance(backends, dict):
            data = {
                **data,
                "backends": {
                    name: {"type": name, **config}
                    if isinstance(config, dict) and "type" not in config and name in TYPES
                    else config
                    for name, config in backends.items()
                },
            }
        return data

    @model_validator(mode="after")
    def _one_of_each_type(self) -> Settings:
        """The default must exist; two backends of one type would share its state and uids."""
        if self.default_backend not in self.backends:
            raise ValueError(
                f"default_backend {self.default_backend!r} is not one of the backends "
                f"({', '.join(self.backends) or 'none'})"
            )
        types = [config.type for config in self.backends.values()]
        if twice := sorted({t for t in types if types.count(t) > 1}):
            raise ValueError(f"at most one backend of each type; {twice} appear more than once")
        return self

    def backend_config(self, type_name: str) -> Any:
        """The settings of this daemon's backend of `type_name` (None when it has none)."""
        return next((c for c in self.backends.values() if c.type == type_name), None)

    @property
    def identity(self) -> DaemonIdentity:
        """Who this daemon is; set once its state dir is claimed (`sandboxd.service.identity`)."""
        if self._identity is None:
            raise RuntimeError("the state dir has not been claimed yet")
        return self._identity

    def with_identity(self, identity: DaemonIdentity) -> Settings:
        """These settings, for the daemon that holds `identity`."""
        resolved = self.model_copy(deep=True)
        resolved._identity = identity
        return resolved

    def quota_for(self, tenant: str) -> TenantQuota:
        return self.tenants.get(tenant, self.tenant_quota)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from defaults, then `config_file` (TOML), then the environment, then overrides."""
    if config_file is None:
        return Settings(**overrides)
    if not config_file.is_file():
        raise FileNotFoundError(f"config file {config_file} does not exist")
    config = {**Settings.model_config, "toml_file": config_file}
    with_file = type("FileSettings", (Settings,), {"model_config": config})
    settings: Settings = with_file(**overrides)
    return settings
