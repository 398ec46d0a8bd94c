"""Sandbox images built from nothing: a debootstrapped Debian base, then the Dockerfiles in
`images/`. Each image is labelled with the hash of its definition and rebuilt only when that
changes. Used by `sandboxd images build|list`."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

IMAGES_DIR = Path(__file__).resolve().parent.parent / "images"
BASE = "sandboxd/base:bookworm"
LABEL = "sandboxd.definition"
SUITE = "bookworm"


def mirror() -> str:
    return os.environ.get("SANDBOXD_DEBIAN_MIRROR", "http://deb.debian.org/debian")


@dataclass(frozen=True)
class ImageDef:
    name: str
    tag: str
    directory: Path | None  # None: the debootstrapped base

    def digest(self) -> str:
        h = hashlib.sha256(f"{SUITE} {mirror()} minbase".encode())
        if self.directory is not None:
            for path in sorted(self.directory.rglob("*")):
                if path.is_file():
                    h.update(path.relative_to(self.directory).as_posix().encode())
                    h.update(path.read_bytes())
        return h.hexdigest()[:16]


def definitions() -> dict[str, ImageDef]:
    defs = {"base": ImageDef("base", BASE, None)}
    for d in sorted(IMAGES_DIR.iterdir()):
        if (d / "Dockerfile").is_file():
            defs[d.name] = ImageDef(d.name, f"sandboxd/{d.name}:{SUITE}", d)
    return defs


def _run(*argv: str, input_file: Path | None = None) -> str:
    with open(input_file, "rb") if input_file else open(os.devnull, "rb") as stdin:
        proc = subprocess.run(argv, stdin=stdin, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} {argv[1]} failed: {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def current_label(tag: str) -> str | None:
    proc = subprocess.run(
        [
            "docker",
            "image",
            "inspect",
            "--format",
            f'{{{{ index .Config.Labels "{LABEL}" }}}}',
            tag,
        ],
        capture_output=True,
        text=True,
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def _build_base(image: ImageDef, log: list[str]) -> None:
    work = Path(tempfile.mkdtemp(prefix="sandboxd-rootfs-", dir="/var/tmp"))
    try:
        rootfs = work / "rootfs"
        log.append(f"debootstrap --variant=minbase {SUITE} from {mirror()}")
        _run("debootstrap", "--variant=minbase", SUITE, str(rootfs), mirror())
        tar = work / "rootfs.tar"
        _run("tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tar), ".")
        _run(
            "docker",
            "import",
            "--change",
            f"LABEL {LABEL}={image.digest()}",
            "--change",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--change",
            'CMD ["/bin/bash"]',
            str(tar),
            image.tag,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def build(names: list[str] | None = None) -> list[str]:
    """Build the named images (default all) and what they need; lines describing what happened."""
    defs = definitions()
    wanted = names or list(defs)
    unknown = [n for n in wanted if n not in defs]
    if unknown:
        raise ValueError(f"no image definition {unknown}; have {sorted(defs)}")
    order = ["base"] + [n for n in wanted if n != "base"]
    log: list[str] = []
    for name in order:
        image = defs[name]
        if current_label(image.tag) == image.digest():
            log.append(f"{image.tag}: up to date")
            continue
        if image.directory is None:
            _build_base(image, log)
        else:
            _run(
                "docker",
                "build",
                "--label",
                f"{LABEL}={image.digest()}",
                "-t",
                image.tag,
                str(image.directory),
            )
        log.append(f"{image.tag}: built")
    return log


def listing() -> list[str]:
    lines = []
    for image in definitions().values():
        label = current_label(image.tag)
        state = (
            "missing"
            if label is None
            else ("up to date" if label == image.digest() else "out of date")
        )
        lines.append(f"{image.tag}  {state}")
    return lines


MOUNT_POINTS = ("workspace", "tmp", "dev", "proc", "run/sandboxd")


def export(name: str, dest: Path) -> str:
    """Unpack an image as a root filesystem for the nsjail backend (`backend.rootfs`), so both
    backends can run the same userland; `/etc/sandboxd-image` names what it came from."""
    image = definitions().get(name)
    tag = image.tag if image else name
    if dest.exists() and any(dest.iterdir()):
        raise ValueError(f"{dest} is not empty")
    dest.mkdir(parents=True, exist_ok=True)
    container = _run("docker", "create", tag, "true").strip()
    try:
        tar = dest.parent / f".{dest.name}.tar"
        _run("docker", "export", "-o", str(tar), container)
        _run("tar", "--numeric-owner", "-C", str(dest), "-xf", str(tar))
        tar.unlink()
    finally:
        _run("docker", "rm", container)
    shutil.rmtree(dest / "dev", ignore_errors=True)  # docker's placeholders; nsjail makes /dev
    for point in MOUNT_POINTS:
        (dest / point).mkdir(parents=True, exist_ok=True)
    (dest / "etc" / "sandboxd-image").write_text(f"{tag} {current_label(tag) or ''}\n")
    dest.chmod(0o755)
    return f"{tag} exported to {dest}"
