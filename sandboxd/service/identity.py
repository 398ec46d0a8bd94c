"""Who a daemon is on a shared host, so that it touches only what its own state dir owns.

Several daemons share one host (test suites, CI, two users, coder's own daemon). Each one:
- holds an exclusive `flock` on `<state>/daemon.lock` for its whole life, taken before it
  touches anything else: a second daemon on the same state dir refuses to start and changes
  nothing;
- has an identity kept in `<state>/identity.json`: a random id that names everything it creates
  outside the state dir (its cgroups live under `<cgroup_parent>/<id>/`, and only those are
  ever reaped), and the host uid range its jails run as;
- reserves that uid range host-wide with one file per block of `UID_SPAN` uids in `lock_dir`
  (`/var/lib/sandboxd-uids` by default), `flock`ed while it runs and naming its state dir
  while it does not: two daemons never share a host uid, running or stopped. The range is
  chosen once (the first free block from `FIRST_UID_BASE`) and kept, since a persistent
  sandbox's files belong to a uid in it; a state dir that is gone frees its blocks.

A lock dies with its process, so a crashed daemon never blocks the next one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
from pathlib import Path

from sandboxd.errors import BackendUnavailable
from sandboxd.settings import UID_SPAN, DaemonIdentity

FIRST_UID_BASE = 200_000
LAST_UID = 2**31 - 2
LOCK_FILE = "daemon.lock"
IDENTITY_FILE = "identity.json"
_OPEN = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


class StateClaim:
    """The locks a running daemon holds; `release` (or process exit) frees them."""

    def __init__(self, identity: DaemonIdentity, fds: list[int]) -> None:
        self.identity = identity
        self._fds = fds

    def release(self) -> None:
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []


def _try_lock(path: Path, note: str) -> int | None:
    """An fd holding an exclusive lock on `path` (its text then `note`), or None if taken."""
    fd = os.open(path, _OPEN, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, note.encode(), 0)
    return fd


def _holder(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return "another sandboxd"
    return text or "another sandboxd"


def _read_identity(path: Path) -> dict[str, object]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}
    with os.fdopen(fd, encoding="utf-8") as fh:
        try:
            data = json.load(fh)
        except ValueError:
            raise BackendUnavailable(
                f"{path} is not valid JSON; restore it, or remove it to give this state dir "
                "a new identity (its sandboxes' uids would change)"
            ) from None
    return data if isinstance(data, dict) else {}


def _write_identity(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
        fh.write("\n")
    os.replace(tmp, path)


def _blocks(uid_base: int) -> range:
    """The lock blocks a range [uid_base, uid_base + UID_SPAN) overlaps."""
    return range(uid_base // UID_SPAN, (uid_base + UID_SPAN - 1) // UID_SPAN + 1)


def _reserved_elsewhere(path: Path, state_dir: Path, block: int) -> str | None:
    """Who holds a block while stopped: the state dir its file names, if that is another
    one whose identity still claims the block (a removed state dir frees its blocks)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except FileNotFoundError:
        return None
    _, found, other = text.partition("state dir ")
    if not found or Path(other) == state_dir.resolve():
        return None
    try:
        base = json.loads((Path(other) / IDENTITY_FILE).read_text(encoding="utf-8"))["uid_base"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return f"state dir {other}" if isinstance(base, int) and block in _blocks(base) else None


def _lock_range(lock_dir: Path, state_dir: Path, uid_base: int, note: str) -> list[int] | str:
    """Locks on every block of the range, or the holder of the first one already taken."""
    fds: list[int] = []
    for block in _blocks(uid_base):
        path = lock_dir / f"uids-{block * UID_SPAN}.lock"
        holder = _reserved_elsewhere(path, state_dir, block)
        fd = None if holder else _try_lock(path, note)
        if fd is None:
            for held in fds:
                os.close(held)
            return holder or _holder(path)
        fds.append(fd)
    return fds


def _uid_blocks_in_use() -> set[int]:
    """The uid blocks of the host's running processes."""
    blocks = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                blocks.add(entry.stat().st_uid // UID_SPAN)
    return blocks


def claim(state_dir: Path, *, uid_base: int | None, cgroup_root: str, lock_dir: Path) -> StateClaim:
    """Lock `state_dir` for this process and reserve its uid range; BackendUnavailable with
    one line saying what to do when another daemon holds either."""
    state_dir.mkdir(mode=0o711, parents=True, exist_ok=True)
    note = f"pid {os.getpid()}, state dir {state_dir.resolve()}\n"
    state_fd = _try_lock(state_dir / LOCK_FILE, note)
    if state_fd is None:
        holder = _holder(state_dir / LOCK_FILE)
        raise BackendUnavailable(
            f"state dir {state_dir} is in use by another sandboxd ({holder}); "
            "stop that daemon or choose another --state-dir"
        )
    try:
        lock_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        path = state_dir / IDENTITY_FILE
        data = _read_identity(path)
        daemon_id = data.get("id")
        if not (isinstance(daemon_id, str) and daemon_id.isalnum()):
            daemon_id = secrets.token_hex(6)
        recorded = data.get("uid_base")
        if uid_base is not None:
            candidates = [uid_base]
        elif isinstance(recorded, int):
            candidates = [recorded]  # its sandboxes' files belong to uids in that range
        else:
            candidates = list(range(FIRST_UID_BASE, LAST_UID - UID_SPAN, UID_SPAN))
        fresh = uid_base is None and not isinstance(recorded, int)
        busy = _uid_blocks_in_use() if fresh else set()
        held: list[int] | str = "no free uid range"
        for base in candidates:
            if base // UID_SPAN in busy:
                continue  # processes run as those uids already (a daemon of an older version?)
            held = _lock_range(lock_dir, state_dir, base, note)
            if isinstance(held, list):
                break
        if not isinstance(held, list):
            where = "the uid_base setting" if uid_base is not None else f"{path}'s uid_base"
            raise BackendUnavailable(
                f"host uids {candidates[0]}-{candidates[0] + UID_SPAN - 1} are in use by another"
                f" sandboxd ({held}); two daemons must never share a uid: set a different "
                f"{where} (a multiple of {UID_SPAN})"
                if len(candidates) == 1
                else f"every host uid range is in use by other daemons (last: {held})"
            )
        identity = DaemonIdentity(daemon_id, base, cgroup_root)
        if data != {"id": identity.id, "uid_base": identity.uid_base}:
            _write_identity(path, {"id": identity.id, "uid_base": identity.uid_base})
        return StateClaim(identity, [state_fd, *held])
    except BaseException:
        os.close(state_fd)
        raise
