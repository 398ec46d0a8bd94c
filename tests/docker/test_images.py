"""Images built from nothing, and the same userland under nsjail (`backend.rootfs`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DOCKER_PROBLEM
from tests.daemon import Daemon

pytestmark = [
    pytest.mark.skipif(DOCKER_PROBLEM is not None, reason=f"docker: {DOCKER_PROBLEM}"),
    pytest.mark.timeout(1800),  # image builds and exports may take up to 900 s
]


def sandboxd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sandboxd", *args], capture_output=True, text=True, timeout=900
    )


def test_images_are_listed_up_to_date() -> None:
    proc = sandboxd("images", "list")
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert {ln.split()[0] for ln in lines} == {
        "sandboxd/base:bookworm",
        "sandboxd/python:bookworm",
        "sandboxd/node:bookworm",
        "sandboxd/jupyter:bookworm",  # interpreter contexts' kernel
    }
    assert all(ln.endswith("up to date") for ln in lines)
    again = sandboxd("images", "build", "python")
    assert again.returncode == 0 and "sandboxd/python:bookworm: up to date" in again.stdout


def test_unknown_image_is_one_line() -> None:
    proc = sandboxd("images", "build", "cobol")
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1


def test_another_mirror_does_not_make_images_out_of_date() -> None:
    # The mirror is not part of an image's hash (a file: mirror that does not exist would fail
    # at once if anything were rebuilt; nothing leaves the host).
    proc = sandboxd("images", "build", "--mirror", "file:///nonexistent/debian")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(": up to date") == 4, proc.stdout


def test_no_mirror_anywhere_is_one_line_naming_the_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sandboxd import cli
    from sandboxd.backends.docker import images

    monkeypatch.delenv(images.MIRROR_ENV, raising=False)
    monkeypatch.setattr(images, "APT_DIR", tmp_path)  # no sources.list at all
    monkeypatch.setattr(images, "BASE", "sandboxd-test/no-such-base:bookworm")  # so: a build
    assert cli.main(["images", "build", "base"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--mirror URL" in err and images.MIRROR_ENV in err, err


def test_nsjail_runs_on_the_docker_images_userland(workdir: Path) -> None:
    rootfs = workdir / "rootfs-python"
    proc = sandboxd("images", "export", "python", str(rootfs))
    assert proc.returncode == 0, proc.stderr
    d = Daemon(workdir, "rootfs", backend={"rootfs": str(rootfs)}).start()
    try:
        with d.client() as c:
            result = c.run(
                code="print(open('/etc/sandboxd-image').read().split()[0]);"
                "import pytest; print(pytest.__version__ > '7')"
            )
            assert result.stdout == "sandboxd/python:bookworm\nTrue\n", (result, result.stderr)
            denied = c.run(code="open('/usr/x', 'w')")
            assert "Read-only file system" in denied.stderr
    finally:
        assert d.stop() == 0
