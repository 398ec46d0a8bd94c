"""`sandboxd token …` and `sandboxd audit verify`: local administration, straight on the state.

These open the daemon's SQLite database directly (root on the daemon's machine), so they work
whether or not the daemon is running; every token change is appended to the audit chain.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sandboxd.service import auth
from sandboxd.service.store import Store


def fail(message: str, code: int = 125) -> int:
    print(f"sandboxd: error: {message}", file=sys.stderr)
    return code


class NoState(ValueError):
    """The state directory does not exist: nothing to administer (and nothing is created)."""


def _open_store(args: argparse.Namespace) -> Store:
    """The daemon's database; refused when its state directory holds none, so that a typo in
    --state-dir never creates an empty state and reports success on it."""
    from sandboxd.settings import load_settings

    overrides = {"state_dir": args.state_dir} if args.state_dir else {}
    settings = load_settings(args.config, **overrides)
    db = settings.state_dir / "sandboxd.db"
    if not db.is_file():
        what = "no state directory" if not settings.state_dir.exists() else "no sandboxd.db in"
        raise NoState(
            f"{what} {settings.state_dir}: start the daemon once (`sandboxd serve`) "
            "or pass the --state-dir it uses"
        )
    return Store(db)


def _store_or_reason(args: argparse.Namespace) -> Store | str:
    """The store, or the one line that says why it cannot be opened."""
    try:
        return _open_store(args)
    except NoState as exc:
        return str(exc)
    except (ValidationError, FileNotFoundError, ValueError, OSError) as exc:
        return f"cannot open the state: {str(exc).splitlines()[0]}"


def _audit(store: Store, action: str, tenant: str | None, target: str, req: dict[str, Any]) -> None:
    store.record_sync(
        action, tenant=tenant, token_id=None, target=target, request={**req, "via": "cli"}
    )


def cmd_token(args: argparse.Namespace) -> int:
    store = _store_or_reason(args)
    if isinstance(store, str):
        return fail(store)
    try:
        if args.token_command == "create":  # noqa: S105  # a subcommand name, not a secret
            try:
                token, token_id = store.sync(
                    lambda db: auth.create_token(db, args.tenant, args.scope, args.name)
                )
            except ValueError as exc:
                return fail(str(exc))
            _audit(store, "token.create", args.tenant, token_id, {"scopes": sorted(args.scope)})
            print(token)
            print(
                f"token {token_id} for tenant {args.tenant} ({', '.join(args.scope)}); "
                "it is shown only once",
                file=sys.stderr,
            )
        elif args.token_command == "list":  # noqa: S105  # a subcommand name, not a secret
            for row in store.sync(lambda db: auth.list_tokens(db, args.tenant)):
                state = "revoked" if row["revoked"] else "active"
                scopes = ",".join(str(s) for s in row["scopes"])  # type: ignore[attr-defined]
                print(f"{row['id']}  {row['tenant']}  {scopes}  {state}  {row['name']}")
        else:
            if not store.sync(lambda db: auth.revoke_token(db, args.token_id)):
                return fail(f"no active token {args.token_id}")
            _audit(store, "token.revoke", None, args.token_id, {})
            print(f"revoked {args.token_id}")
    finally:
        store.close()
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    store = _store_or_reason(args)
    if isinstance(store, str):
        return fail(store)
    try:
        verdict = store.sync(store.audit.verify)
    finally:
        store.close()
    if verdict.ok:
        print(f"ok: {verdict.records} records, chain intact")
        return 0
    return fail(f"audit trail TAMPERED at record {verdict.seq}: {verdict.problem}", code=1)


def add_parsers(sub: Any) -> None:
    token = sub.add_parser("token", help="create, list and revoke API tokens (local, as root)")
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = token_sub.add_parser("create", help="create a token and print it once")
    create.add_argument("--tenant", required=True, help="tenant the token acts for")
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        choices=auth.SCOPES,
        help="what the token may do (repeatable)",
    )
    create.add_argument("--name", default="", help="a note to recognise the token by")
    listing = token_sub.add_parser("list", help="list tokens (never their secrets)")
    listing.add_argument("--tenant", help="only this tenant's tokens")
    revoke = token_sub.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("token_id", help="the id `sandboxd token list` shows")
    token.set_defaults(func=cmd_token)

    audit = sub.add_parser("audit", help="check the audit trail")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    audit_sub.add_parser("verify", help="detect edited, deleted or reordered records")
    audit.set_defaults(func=cmd_audit)

    for parser in (*token_sub.choices.values(), *audit_sub.choices.values()):
        parser.add_argument(
            "--state-dir",
            type=Path,
            help="the daemon's state directory (default /var/lib/sandboxd)",
        )
        parser.add_argument("--config", type=Path, help="TOML settings file")
