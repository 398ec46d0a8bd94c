"""A run's filesystem on the host: one size- and inode-capped tmpfs, handled symlink-safely.

Layout under `<state>/runs/<id>/` (root-owned 0711: traverse, never list): `fs/` is the tmpfs
(root-owned 0711), with `fs/work` shown in the jail as `/workspace`, `fs/tmp` as `/tmp` and
`fs/shm` as `/dev/shm`. One
tmpfs means `disk_mib` caps all three together. Every path below `fs/work` may have been written
by the sandbox, so the daemon only touches it through directory fds with O_NOFOLLOW.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import os
import re
import secrets
import shutil
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sandboxd.backends.host import idmap, linux
from sandboxd.errors import InvalidRequest, NotFound, PayloadTooLarge
from sandboxd.models import MAIN_FILE, CollectedFile, RunRequest, RunResult

SUBDIRS = ("work", "tmp", "shm")
CACHE_DIR = "cache"  # beside `fs`: the mount point of the tenant's download cache
#: Where a run sees its download cache, and the variables that point tools at it.
JAIL_CACHE = "/cache"
CACHE_ENV = {"XDG_CACHE_HOME": JAIL_CACHE, "PIP_CACHE_DIR": f"{JAIL_CACHE}/pip"}
NO_ROOM = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
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


class WorkTree:
    """A directory the sandbox writes, handled only through directory fds and O_NOFOLLOW."""

    def __init__(self, path: Path, *, uid: int, gid: int) -> None:
        self.path = path
        self.uid = uid
        self.gid = gid

    def _open_parent(self, rel: str, *, create: bool) -> tuple[int, str]:
        """An fd of the directory that holds `rel`, walked without following any link."""
        parts = rel.split("/")
        fd = os.open(self.path, _OPEN_DIR)
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
                        f"{rel!r}: {part!r} is not a directory in the workspace", field="path"
                    ) from exc
                os.close(fd)
                fd = nxt
        except BaseException:
            os.close(fd)
            raise
        return fd, parts[-1]

    def _existing_parent(self, rel: str) -> tuple[int, str]:
        try:
            return self._open_parent(rel, create=False)
        except InvalidRequest as exc:
            raise NotFound(f"no file {rel!r}") from exc

    def write_file(self, rel: str, data: bytes, *, executable: bool = False) -> None:
        """Write one file, owned by the sandbox user; refuses links and non-regular files.

        All or nothing: the data goes to a fresh temporary name, renamed over `rel` once
        complete, so a write that does not fit leaves no partial file and any earlier file
        of that name unchanged."""
        dir_fd, name = self._open_parent(rel, create=True)
        try:
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                pass
            else:
                if not stat.S_ISREG(st.st_mode):
                    raise InvalidRequest(f"cannot write {rel!r}: not a regular file", field="path")
            tmp = f".sandboxd-{secrets.token_hex(8)}.part"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)
            except OSError as exc:
                raise InvalidRequest(f"cannot write {rel!r}: {exc.strerror}", field="path") from exc
            try:
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fchown(fd, self.uid, self.gid)
                    os.fchmod(fd, 0o755 if executable else 0o644)
                finally:
                    os.close(fd)
                os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException as exc:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dir_fd)
                if isinstance(exc, OSError) and exc.errno in NO_ROOM:
                    raise PayloadTooLarge(f"{rel!r} does not fit: {exc.strerror}") from exc
                if isinstance(exc, IsADirectoryError | NotADirectoryError):
                    raise InvalidRequest(
                        f"cannot write {rel!r}: not a regular file", field="path"
                    ) from exc
                raise
        finally:
            os.close(dir_fd)

    def exists(self, rel: str) -> bool:
        """Whether anything (file, directory, link) is at `rel`; links are not followed."""
        try:
            dir_fd, name = self._existing_parent(rel)
        except NotFound:
            return False
        try:
            os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        finally:
            os.close(dir_fd)
        return True

    def read_file(self, rel: str, *, max_bytes: int) -> bytes:
        """The content of a regular file; links, directories and specials are refused."""
        dir_fd, name = self._existing_parent(rel)
        try:
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
            except FileNotFoundError as exc:
                raise NotFound(f"no file {rel!r}") from exc
            except OSError as exc:
                raise InvalidRequest(f"cannot read {rel!r}: {exc.strerror}", field="path") from exc
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise InvalidRequest(f"{rel!r} is not a regular file", field="path")
                if st.st_size > max_bytes:
                    raise PayloadTooLarge(f"{rel!r} is {st.st_size} bytes, over {max_bytes}")
                return _read_all(fd, st.st_size)
            finally:
                os.close(fd)
        finally:
            os.close(dir_fd)

    def delete(self, rel: str) -> None:
        """Remove a file, a link (never its target) or a directory tree."""
        dir_fd, name = self._existing_parent(rel)
        try:
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError as exc:
                raise NotFound(f"no file {rel!r}") from exc
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(name, dir_fd=dir_fd)
            else:
                os.unlink(name, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)

    def _walk(self) -> Iterator[tuple[str, str, int]]:
        """(relative path, name, dir fd) of every non-directory entry, links not followed."""
        for dirpath, _dirs, files, dfd in os.fwalk(self.path, follow_symlinks=False):
            rel_dir = os.path.relpath(dirpath, self.path)
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
                data = _read_all(fd, st.st_size)
                budget -= len(data)
            finally:
                os.close(fd)
            content = base64.b64encode(data).decode()
            out.files.append(CollectedFile(path=rel, content=content, size=len(data)))
        return out

    def archive_to_fd(self, fd: int) -> None:
        """Write a tar of the tree to `fd`: files, directories and links (as links)."""
        with os.fdopen(os.dup(fd), "wb") as out, tarfile.open(fileobj=out, mode="w") as tar:
            for dirpath, dirs, files, dfd in os.fwalk(self.path, follow_symlinks=False):
                rel_dir = os.path.relpath(dirpath, self.path)
                for name in sorted(dirs + files):
                    rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                    info = tarfile.TarInfo(rel)
                    info.mode, info.mtime = st.st_mode & 0o7777, int(st.st_mtime)
                    if stat.S_ISDIR(st.st_mode):
                        info.type = tarfile.DIRTYPE
                        tar.addfile(info)
                    elif stat.S_ISLNK(st.st_mode):
                        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(name, dir_fd=dfd)
                        tar.addfile(info)
                    elif stat.S_ISREG(st.st_mode):
                        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                        fd = os.open(name, flags, dir_fd=dfd)
                        with os.fdopen(fd, "rb") as fh:
                            info.size = os.fstat(fd).st_size
                            tar.addfile(info, fh)


def _read_all(fd: int, size: int) -> bytes:
    chunks, left = [], size
    while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class Workspace:
    """The host side of one run: its tmpfs, holding /tmp and /dev/shm, and its work tree.

    A one-shot run's work tree is `fs/work` on the same tmpfs; a persistent sandbox's run
    brings its own (on the sandbox's disk).
    """

    def __init__(self, root: Path, *, uid: int, gid: int, work_dir: Path | None = None) -> None:
        self.root = root
        self.fs = root / "fs"
        self.uid = uid
        self.gid = gid
        self.tree = WorkTree(work_dir or self.fs / "work", uid=uid, gid=gid)
        #: The tenant's download cache as this run sees it (mounted by `attach_cache`).
        self.cache: Path | None = None

    @property
    def work(self) -> Path:
        return self.tree.path

    def attach_cache(self, source: Path, disk_uid: int) -> None:
        """Mount the tenant's download cache `source` (its files `disk_uid`'s on disk) on a
        root-owned directory of the run, writable, its files seen as the run's uid: every run
        of the tenant reads and writes one cache, whatever its own uid, and the files stay
        `disk_uid`'s on disk."""
        target = self.root / CACHE_DIR
        target.mkdir(mode=0o711)
        idmap.idmapped_bind(source, target, disk_uid=disk_uid, seen_uid=self.uid, read_only=False)
        self.cache = target

    def create(self, *, disk_mib: int) -> None:
        """Make the run directory and mount its tmpfs. Nothing of the sandbox exists yet."""
        for d in (self.root, self.fs):  # 0711 whatever the umask: nsjail traverses them
            d.mkdir(mode=0o711)
            d.chmod(0o711)
        linux.mount_tmpfs(self.fs, size_bytes=disk_mib << 20, nr_inodes=_inodes(disk_mib))
        for name in SUBDIRS:
            d = self.fs / name
            d.mkdir(mode=0o700)
            os.chown(d, self.uid, self.gid)  # fresh directory on a fresh tmpfs: no link to follow

    def rename(self, root: Path) -> None:
        """Move the run directory (a warm sandbox's, once its run is known)."""
        os.rename(self.root, root)
        work_below_fs = self.tree.path == self.fs / "work"
        self.root, self.fs = root, root / "fs"
        if work_below_fs:
            self.tree.path = self.fs / "work"

    def resize(self, *, disk_mib: int) -> None:
        """Re-cap the tmpfs (a warm sandbox's, before its run gets it)."""
        linux.resize_tmpfs(self.fs, size_bytes=disk_mib << 20, nr_inodes=_inodes(disk_mib))

    def destroy(self) -> None:
        """Unmount the tmpfs (dropping everything the sandbox wrote) and the download cache
        (whose files stay), then remove our dirs: never through a mount still there."""
        cache = self.root / CACHE_DIR
        for mount in (self.fs, cache):
            if mount.is_mount():
                linux.umount(mount)
        if cache.is_mount():
            raise OSError(f"{cache} is still mounted; {self.root} is left")
        shutil.rmtree(self.root, ignore_errors=True)

    def write_file(self, rel: str, data: bytes, *, executable: bool = False) -> None:
        self.tree.write_file(rel, data, executable=executable)

    def write_run_file(self, name: str, data: bytes) -> Path:
        """A file of the run beside its tmpfs (e.g. the stdin a container reads): readable by
        the run's uid only (the run directory is 0711, so never by other local users)."""
        path = self.root / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchown(fd, self.uid, self.gid)
        finally:
            os.close(fd)
        return path

    def collect(self, patterns: list[str], *, max_bytes: int, max_files: int) -> Collected:
        return self.tree.collect(patterns, max_bytes=max_bytes, max_files=max_files)


def _inodes(disk_mib: int) -> int:
    return max(1024, disk_mib * 128)


def prepare_workspace(
    ws: Workspace, request: RunRequest, persistent: bool, cache: tuple[Path, int] | None = None
) -> None:
    """Mount the run's tmpfs (and the download `cache`: its tree and disk uid, if given) and
    write the request's files and main file into its work tree."""
    ws.create(disk_mib=request.limits.disk_mib)
    if cache is not None:
        ws.attach_cache(*cache)
    write_request_files(ws, request, persistent)


def write_request_files(ws: Workspace, request: RunRequest, persistent: bool) -> None:
    """Write the request's files and main file into the work tree."""
    for f in request.files:
        ws.write_file(f.path, f.data(), executable=f.executable)
    main = MAIN_FILE[request.language]
    # A persistent workspace keeps its main file when the request brings no code.
    wants_main = request.command is None and (request.code or not persistent)
    if wants_main and all(f.path != main for f in request.files):
        ws.write_file(main, request.code.encode())


def reap_run_dirs(runs_dir: Path) -> None:
    """Unmount and remove every run directory a dead daemon left under `runs_dir`."""
    for mount_point in linux.mounts_under(runs_dir):
        if mount_point != runs_dir:
            linux.umount(mount_point)
    for child in runs_dir.iterdir():
        shutil.rmtree(child, ignore_errors=True)


class CollectCaps(Protocol):
    """How much a run may hand back (the daemon's `Settings` is one)."""

    max_collect_bytes: int
    max_collect_files: int


async def collect_files(
    result: RunResult, ws: Workspace, request: RunRequest, settings: CollectCaps
) -> None:
    """Put the files the request asked to collect into `result`, noting what was skipped."""
    if not request.collect:
        return
    got = await asyncio.to_thread(
        ws.collect,
        request.collect,
        max_bytes=settings.max_collect_bytes,
        max_files=settings.max_collect_files,
    )
    result.files = got.files
    if got.skipped:
        note = "not collected: " + "; ".join(got.skipped[:10])
        result.message = f"{result.message}; {note}" if result.message else note
