"""A run's filesystem on the host: one size- and inode-capped tmpfs, handled symlink-safely.

Layout under `<state>/runs/<id>/` (root-owned 0711: traverse, never list): `fs/` is the tmpfs
(root-owned 0711), with `fs/work` shown in the jail as `/workspace`, `fs/tmp` as `/tmp` and
`fs/shm` as `/dev/shm`. One
tmpfs means `disk_mib` caps all three together. Every path below `fs/work` may have been written
by the sandbox, so the daemon only touches it through directory fds with O_NOFOLLOW.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sandboxd import linux
from sandboxd.errors import InvalidRequest, PayloadTooLarge
from sandboxd.models import CollectedFile

SUBDIRS = ("work", "tmp", "shm")
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile a workspace glob: `*` and `?` stay inside one path component, `**/` spans many."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:[^/]*/)*", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : end].replace("\\", "\\\\")
            if body.startswith("!"):
                body = "^" + body[1:]
            out, i = out + f"(?!/)[{body}]", end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


@dataclass
class Collected:
    files: list[CollectedFile] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


class Workspace:
    """The host side of one run's (or sandbox's) files."""

    def __init__(self, root: Path, *, uid: int, gid: int) -> None:
        self.root = root
        self.fs = root / "fs"
        self.uid = uid
        self.gid = gid

    @property
    def work(self) -> Path:
        return self.fs / "work"

    def create(self, *, disk_mib: int) -> None:
        """Make the run directory and mount its tmpfs. Nothing of the sandbox exists yet."""
        self.root.mkdir(mode=0o711)
        self.fs.mkdir(mode=0o711)
        size = disk_mib * 1024 * 1024
        linux.mount_tmpfs(self.fs, size_bytes=size, nr_inodes=max(1024, disk_mib * 128))
        for name in SUBDIRS:
            d = self.fs / name
            d.mkdir(mode=0o700)
            os.chown(d, self.uid, self.gid)  # fresh directory on a fresh tmpfs: no link to follow

    def destroy(self) -> None:
        """Unmount the tmpfs (dropping everything the sandbox wrote), then remove our dirs."""
        if self.fs.is_mount():
            linux.umount(self.fs)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- writing -----------------------------------------------------------------------------

    def _open_parent(self, rel: str, *, create: bool) -> tuple[int, str]:
        """An fd of the directory that holds `rel`, walked without following any link."""
        parts = rel.split("/")
        fd = os.open(self.work, _OPEN_DIR)
        try:
            for part in parts[:-1]:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o755, dir_fd=fd)
                        os.chown(part, self.uid, self.gid, dir_fd=fd, follow_symlinks=False)
                try:
                    nxt = os.open(part, _OPEN_DIR, dir_fd=fd)
                except OSError as exc:
                    raise InvalidRequest(
                        f"{rel!r}: {part!r} is not a directory in the workspace"
                    ) from exc
                os.close(fd)
                fd = nxt
        except BaseException:
            os.close(fd)
            raise
        return fd, parts[-1]

    def write_file(self, rel: str, data: bytes, *, executable: bool = False) -> None:
        """Write one file, owned by the sandbox user; refuses links and non-regular files."""
        dir_fd, name = self._open_parent(rel, create=True)
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            try:
                fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
            except OSError as exc:
                raise InvalidRequest(f"cannot write {rel!r}: {exc.strerror}") from exc
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise InvalidRequest(f"cannot write {rel!r}: not a regular file")
                os.ftruncate(fd, 0)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fchown(fd, self.uid, self.gid)
                os.fchmod(fd, 0o755 if executable else 0o644)
            except OSError as exc:
                if exc.errno in (28, 27):  # ENOSPC, EFBIG
                    raise PayloadTooLarge(f"files do not fit in disk_mib: {exc.strerror}") from exc
                raise
            finally:
                os.close(fd)
        finally:
            os.close(dir_fd)

    # -- reading -----------------------------------------------------------------------------

    def _walk(self) -> Iterator[tuple[str, str, int]]:
        """(relative path, name, dir fd) of every regular-looking entry, links not followed."""
        for dirpath, _dirs, files, dfd in os.fwalk(self.work, follow_symlinks=False):
            rel_dir = os.path.relpath(dirpath, self.work)
            for name in sorted(files):
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                yield rel, name, dfd

    def collect(self, patterns: list[str], *, max_bytes: int, max_files: int) -> Collected:
        """Files matching any glob, capped in count and total size; links and specials skipped."""
        out = Collected()
        if not patterns:
            return out
        regexes = [glob_regex(p) for p in patterns]
        budget = max_bytes
        for rel, name, dfd in self._walk():
            if not any(r.match(rel) for r in regexes):
                continue
            if len(out.files) >= max_files:
                out.skipped.append(f"{rel} (more than {max_files} files)")
                continue
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
            except OSError:
                out.skipped.append(f"{rel} (a link or unreadable)")
                continue
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    out.skipped.append(f"{rel} (not a regular file)")
                    continue
                if st.st_size > budget:
                    out.skipped.append(f"{rel} ({st.st_size} bytes, over the collect cap)")
                    continue
                data = os.read(fd, st.st_size + 1) if st.st_size else b""
                data = data[: st.st_size]
                budget -= len(data)
            finally:
                os.close(fd)
            content = base64.b64encode(data).decode()
            out.files.append(CollectedFile(path=rel, content=content, size=len(data)))
        return out
