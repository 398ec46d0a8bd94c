"""Bearer tokens: each belongs to a tenant and carries scopes; only its hash is stored."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

# Re-exported for callers that still import them from here; clients use sandboxd.local_token.
from sandboxd.local_token import ADMIN_TOKEN_FILE as ADMIN_TOKEN_FILE
from sandboxd.local_token import local_admin_token as local_admin_token
from sandboxd.service import queries

Scope = Literal["run", "sandboxes", "audit:read", "metrics", "admin"]
SCOPES: tuple[str, ...] = get_args(Scope)
TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
TOKEN_RE = re.compile(r"^sbd_([0-9a-f]{12})_[A-Za-z0-9_-]{20,}$")
DEFAULT_TENANT = "default"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's id, its tenant and scopes."""

    token_id: str
    tenant: str
    scopes: frozenset[str]

    def can(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def readable_tenant(principal: Principal, asked: str | None) -> str | None:
    """Whose audit records a caller may page through: its own tenant's; for admin, the
    tenant it asked for, or every tenant's (None)."""
    return asked if principal.can("admin") else principal.tenant


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_scopes(scopes: list[str]) -> list[str]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise ValueError(f"scopes must be some of {', '.join(SCOPES)}; got {unknown or 'none'}")
    return sorted(set(scopes))


def create_token(
    db: sqlite3.Connection, tenant: str, scopes: list[str], name: str = ""
) -> tuple[str, str]:
    """A new token (shown once) and its id."""
    if not TENANT_RE.match(tenant):
        raise ValueError(f"tenant {tenant!r} must match {TENANT_RE.pattern}")
    token_id = secrets.token_hex(6)
    token = f"sbd_{token_id}_{secrets.token_urlsafe(32)}"
    queries.insert_token(
        db, token_id, tenant, check_scopes(scopes), token_hash(token), name, time.time()
    )
    return token, token_id


def list_tokens(db: sqlite3.Connection, tenant: str | None = None) -> list[dict[str, object]]:
    return [
        {
            "id": r.id,
            "tenant": r.tenant,
            "scopes": r.scopes,
            "name": r.name,
            "created_at": r.created_at,
            "revoked": r.revoked_at is not None,
        }
        for r in queries.tokens(db, tenant)
    ]


def revoke_token(db: sqlite3.Connection, token_id: str) -> bool:
    return queries.revoke_token(db, token_id, time.time())


def lookup(db: sqlite3.Connection, token: str) -> Principal | str:
    """The principal of a valid token, or why it is not valid."""
    if not TOKEN_RE.match(token):
        return "malformed token"
    row = queries.token_by_hash(db, token_hash(token))
    if row is None:
        return "unknown token"
    if row.revoked_at is not None:
        return "token revoked"
    return Principal(row.id, row.tenant, frozenset(row.scopes))


def ensure_admin_token(db: sqlite3.Connection, state_dir: Path) -> str | None:
    """On first start, create an admin token and leave it in `state_dir/admin.token` (0600)."""
    path = state_dir / ADMIN_TOKEN_FILE
    if path.exists():
        return None
    token, token_id = create_token(db, DEFAULT_TENANT, ["admin"], name="bootstrap admin")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token_id
