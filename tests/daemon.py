"""The daemon harness lives in `sandboxd.testing` (tests, bench and coder share it); this
module keeps the tests' imports working."""

from sandboxd.testing import (
    SESSION_UID_BASES,
    STARTUP_S,
    Daemon,
    DaemonFailed,
    free_port,
    write_toml,
)

__all__ = ["SESSION_UID_BASES", "STARTUP_S", "Daemon", "DaemonFailed", "free_port", "write_toml"]
