"""Where a local daemon leaves its bootstrap admin token, and how a client on this machine
reads it.

Its own module, importing nothing of sandboxd: the daemon (`sandboxd.service.auth`) writes the file,
while clients (`sandboxd.client`, coder) only read it and must not drag in the daemon's
internals (sqlite, settings, backends) to do so.
"""

from __future__ import annotations

from pathlib import Path

ADMIN_TOKEN_FILE = "admin.token"  # noqa: S105  # a file name, not a secret


def local_admin_token(state_dir: Path) -> str | None:
    """The admin token of a daemon on this machine, when this user may read it."""
    try:
        return (state_dir / ADMIN_TOKEN_FILE).read_text().strip() or None
    except OSError:
        return None
