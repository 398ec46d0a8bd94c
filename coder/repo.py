"""The repository a solve works on: its files (tracked and untracked-but-not-ignored, plus the
ignored ones the `include_ignored` globs name), capped, and writing a patch back without
following links.

Why the globs: generated files the code imports are gitignored by design (setuptools-scm's
`src/pkg/_version.py`), and without them the tests cannot even import the package. Only files
a glob names are added, never a whole ignored tree (`.venv`, build output). `.coder/setup.sh`
is the one file of `.coder/` that goes along: it is the repository's own setup recipe."""

from __future__ import annotations

import asyncio
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from coder.edits import safe_path
from coder.errors import UsageError

#: The largest file uploaded: what one upload request holds once base64-encoded
#: (coder.sandbox.MAX_BATCH_BYTES). Tests read more than the code the writer sees: wcwidth's
#: check that its C sources are all listed globs a 2.7 MB generated table, and failed (in
#: every iteration, whatever the fix) while files over 1 MiB were left out.
MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_TOTAL_BYTES = 24 * 1024 * 1024
SKIP_DIRS = {
    ".git",
    ".coder",
    "__pycache__",
    "node_modules",
    ".venv",
    "venv",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".tox",
}


@dataclass
class RepoFiles:
    text: dict[str, str] = field(default_factory=dict)
    binary: dict[str, bytes] = field(default_factory=dict)
    executable: set[str] = field(default_factory=set)
    skipped: list[str] = field(default_factory=list)

    def all_bytes(self) -> dict[str, bytes]:
        return {**{p: c.encode() for p, c in self.text.items()}, **self.binary}


async def _git_files(root: Path) -> list[str] | None:
    try:
        proc = await asyncio.create_subprocess_exec(
            "git",
            "-C",
            str(root),
            "ls-files",
            "-co",
            "--exclude-standard",
            "-z",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except FileNotFoundError:
        return None
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        return None
    return [p for p in out.decode(errors="surrogateescape").split("\0") if p]


def _walk(root: Path) -> list[str]:
    found = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(files):
            found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return found


SETUP_SCRIPT = ".coder/setup.sh"


def _included(root: Path, globs: list[str]) -> list[str]:
    """Files under `root` that a glob names, as relative paths; none reached through a link
    out of the repository."""
    found: set[str] = set()
    top = root.resolve()
    for pattern in globs:
        if safe_path(pattern) is None:
            raise UsageError(f"include_ignored glob {pattern!r} is not inside the repository")
        for path in root.glob(pattern):
            if path.is_file() and path.resolve().is_relative_to(top):
                found.add(path.relative_to(root).as_posix())
    if (root / SETUP_SCRIPT).is_file():
        found.add(SETUP_SCRIPT)
    return sorted(found)


def _read(root: Path, names: list[str]) -> RepoFiles:
    repo, total = RepoFiles(), 0
    for name in dict.fromkeys(names):
        rel = safe_path(name)
        if rel is None or (rel.split("/")[0] in SKIP_DIRS and rel != SETUP_SCRIPT):
            continue
        path = root / rel
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue  # deleted but still tracked
        if not stat.S_ISREG(st.st_mode):
            repo.skipped.append(f"{rel} (not a regular file)")
            continue
        if st.st_size > MAX_FILE_BYTES:
            repo.skipped.append(f"{rel} ({st.st_size} bytes)")
            continue
        total += st.st_size
        if total > MAX_TOTAL_BYTES:
            raise UsageError(f"the repository is larger than {MAX_TOTAL_BYTES >> 20} MiB")
        data = path.read_bytes()
        if st.st_mode & 0o111:
            repo.executable.add(rel)
        try:
            if b"\0" in data:
                raise UnicodeDecodeError("utf-8", data, 0, 1, "NUL byte")
            repo.text[rel] = data.decode()
        except UnicodeDecodeError:
            repo.binary[rel] = data
    return repo


async def load(root: Path, include_ignored: list[str] | None = None) -> RepoFiles:
    if not await asyncio.to_thread(root.is_dir):
        raise UsageError(f"{root} is not a directory")
    names = await _git_files(root)
    if names is None:
        names = await asyncio.to_thread(_walk, root)
    names += await asyncio.to_thread(_included, root, include_ignored or [])
    repo = await asyncio.to_thread(_read, root, names)
    if not repo.text:
        raise UsageError(f"{root} has no text files to work on")
    return repo


def write_back(root: Path, changed: dict[str, str]) -> None:
    """Write changed files into the repository, refusing any path that goes through a link."""
    for rel, content in changed.items():
        safe = safe_path(rel)
        if safe is None:
            raise UsageError(f"refusing to write {rel!r}: not inside the repository")
        path = root
        for part in safe.split("/")[:-1]:
            path = path / part
            if path.is_symlink():
                raise UsageError(f"refusing to write {rel!r}: {path} is a link")
            path.mkdir(exist_ok=True)
        target = path / safe.split("/")[-1]
        if target.is_symlink():
            raise UsageError(f"refusing to write {rel!r}: it is a link")
        target.write_text(content)
