"""The daemon's own file handling on sandbox-written paths: links are never followed.

These drive `Workspace` directly on a real tmpfs, as the daemon does for persistent
workspaces that a jail has written before.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandboxd.backends.host import seccomp
from sandboxd.backends.host.workspace import Workspace
from sandboxd.errors import InvalidRequest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def workspace(workdir: Path) -> Iterator[Workspace]:
    ws = Workspace(workdir / f"ws-{os.getpid()}", uid=200_999, gid=200_999)
    ws.create(disk_mib=4)
    yield ws
    ws.destroy()
    assert not ws.root.exists()


@pytest.fixture
def outside(workdir: Path) -> Iterator[Path]:
    target = workdir / "outside-secret"
    target.write_text("host secret\n")
    yield target
    assert target.read_text() == "host secret\n"
    target.unlink()


def test_write_through_symlinked_file_is_refused(workspace: Workspace, outside: Path) -> None:
    os.symlink(outside, workspace.work / "evil")
    with pytest.raises(InvalidRequest):
        workspace.write_file("evil", b"pwned")


def test_write_through_symlinked_directory_is_refused(workspace: Workspace, outside: Path) -> None:
    os.symlink(outside.parent, workspace.work / "dir")
    with pytest.raises(InvalidRequest):
        workspace.write_file("dir/outside-secret", b"pwned")
    assert not (outside.parent / "x").exists()


def test_write_to_fifo_is_refused_without_blocking(workspace: Workspace) -> None:
    os.mkfifo(workspace.work / "pipe")
    with pytest.raises(InvalidRequest):
        workspace.write_file("pipe", b"data")


def test_written_files_belong_to_the_sandbox_user(workspace: Workspace) -> None:
    workspace.write_file("a/b/c.txt", b"x", executable=True)
    st = os.stat(workspace.work / "a/b/c.txt")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (200_999, 200_999, 0o755)
    assert os.stat(workspace.work / "a").st_uid == 200_999


def test_collect_skips_links_to_outside(workspace: Workspace, outside: Path) -> None:
    os.symlink(outside, workspace.work / "secret.txt")
    os.symlink(outside.parent, workspace.work / "up")
    (workspace.work / "ok.txt").write_text("fine")
    got = workspace.collect(["*.txt", "up/**"], max_bytes=1 << 20, max_files=10)
    assert [f.path for f in got.files] == ["ok.txt"]
    assert any("secret.txt" in s for s in got.skipped)


def test_collect_caps_count_and_bytes(workspace: Workspace) -> None:
    for i in range(5):
        (workspace.work / f"f{i}.bin").write_bytes(b"x" * 1000)
    got = workspace.collect(["*.bin"], max_bytes=2500, max_files=4)
    assert [f.size for f in got.files] == [1000, 1000]
    assert len(got.skipped) == 3


def test_destroy_does_not_follow_links_out(workspace: Workspace, outside: Path) -> None:
    os.symlink(outside.parent, workspace.work / "up")
    workspace.destroy()
    assert outside.exists()


def test_checked_in_policies_match_the_rules() -> None:
    assert (REPO / "seccomp/default.policy").read_text() == seccomp.render_kafel()
    assert (REPO / "seccomp/default.json").read_text() == seccomp.render_docker_text()


def test_docker_profile_denies_what_kafel_denies() -> None:
    profile = seccomp.render_docker()
    assert profile["defaultAction"] == "SCMP_ACT_ALLOW"
    assert profile["architectures"] == ["SCMP_ARCH_X86_64"]
    denied = {n for rule in profile["syscalls"] if "args" not in rule for n in rule["names"]}
    assert denied == set(seccomp.denied_names()) | set(seccomp.ENOSYS_CALLS)
    kafel = seccomp.render_kafel()
    for name in seccomp.denied_names():
        assert name in kafel or name in seccomp.KAFEL_BY_NUMBER
    # libseccomp has no masked not-equal: each namespace flag is its own "bit is set" rule,
    # so that a plain clone (fork, threads) stays allowed.
    clone_rules = [r for r in profile["syscalls"] if r["names"] == ["clone"]]
    bits = [r["args"][0]["value"] for r in clone_rules]
    assert all(r["args"][0]["valueTwo"] == r["args"][0]["value"] for r in clone_rules)
    assert sum(bits) == seccomp.CLONE_NS_FLAGS and all(b & (b - 1) == 0 for b in bits)
    socket_rules = [r for r in profile["syscalls"] if r["names"] == ["socket"]]
    blocked_families = {r["args"][0]["value"] for r in socket_rules if len(r["args"]) == 1}
    assert {17, 40, 38}.issubset(blocked_families)
    assert not {1, 2, 10} & blocked_families
