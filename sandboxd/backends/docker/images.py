"""Sandbox images built from nothing: a debootstrapped Debian base, then the Dockerfiles in
`images/`. Each image is labelled with the hash of its definition and rebuilt only when that
changes. Used by `sandboxd images build|list|export`.

The base is debootstrapped from the Debian mirror the host's own apt already uses (the first
`deb` source for bookworm's main component in /etc/apt), so the project names no mirror of its
own and an air-gapped host uses its local one; `--mirror URL` or `$SANDBOXD_DEBIAN_MIRROR`
overrides it. The mirror is not part of an image's hash: every mirror serves the same packages.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

IMAGES_DIR = Path(__file__).resolve().parents[3] / "images"
BASE = "sandboxd/base:bookworm"
LABEL = "sandboxd.definition"
SUITE = "bookworm"
MIRROR_ENV = "SANDBOXD_DEBIAN_MIRROR"
APT_DIR = Path("/etc/apt")
#: URI schemes debootstrap can fetch from (apt's `cdrom:`, `mirror+…:`, `tor+…:` it cannot).
MIRROR_SCHEMES = ("http://", "https://", "ftp://", "file:/")
#: `TYPE [OPTIONS] URI SUITE COMPONENTS...`, a comment already cut off.
_ONE_LINE = re.compile(
    r"^(?P<type>\S+)\s+(?:\[[^\]]*\]\s*)?(?P<uri>\S+)\s+(?P<suite>\S+)(?P<rest>.*)$"
)


@dataclass(frozen=True)
class AptSource:
    """One apt source entry (a one-line `deb` line, or one URI of a deb822 stanza)."""

    type: str
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


def parse_one_line(text: str) -> Iterator[AptSource]:
    """`deb [opt=value ...] URI SUITE COMPONENT...` lines, as in sources.list and *.list."""
    for raw in text.splitlines():
        m = _ONE_LINE.match(raw.split("#", 1)[0].strip())
        if m:
            yield AptSource(m["type"], m["uri"], (m["suite"],), tuple(m["rest"].split()))


def parse_deb822(text: str) -> Iterator[AptSource]:
    """deb822 stanzas (*.sources): `Types`, `URIs`, `Suites`, `Components`, `Enabled`."""
    for stanza in re.split(r"\n[ \t]*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and key is not None:  # a continuation (e.g. an inline key)
                fields[key] += " " + line.strip()
            elif ":" in line:
                key, value = line.split(":", 1)
                key = key.strip().lower()
                fields[key] = value.strip()
        if fields.get("enabled", "yes").lower() == "no":
            continue
        for kind in fields.get("types", "").split():
            for uri in fields.get("uris", "").split():
                suites = tuple(fields.get("suites", "").split())
                yield AptSource(kind, uri, suites, tuple(fields.get("components", "").split()))


def apt_sources(apt_dir: Path) -> Iterator[AptSource]:
    """Every source apt reads, in apt's order: sources.list, then sources.list.d by name."""
    files = [apt_dir / "sources.list"]
    parts = apt_dir / "sources.list.d"
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.suffix in (".list", ".sources"))
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:  # missing or unreadable: apt would skip it too
            continue
        yield from (parse_deb822 if path.suffix == ".sources" else parse_one_line)(text)


def configured_mirror(apt_dir: Path | None = None) -> str | None:
    """The first `deb` URI apt uses for bookworm's main component, or None."""
    for src in apt_sources(apt_dir or APT_DIR):
        if (
            src.type == "deb"
            and SUITE in src.suites
            and "main" in src.components
            and src.uri.startswith(MIRROR_SCHEMES)
        ):
            return src.uri
    return None


def mirror(override: str | None = None, apt_dir: Path | None = None) -> str:
    """The mirror to debootstrap from: the override, `$SANDBOXD_DEBIAN_MIRROR`, else apt's."""
    found = override or os.environ.get(MIRROR_ENV) or configured_mirror(apt_dir)
    if not found:
        raise ValueError(
            f"no apt source for Debian {SUITE} main in {apt_dir or APT_DIR}/sources.list(.d): "
            f"give the mirror with `sandboxd images build --mirror URL` or {MIRROR_ENV}=URL"
        )
    return found


@dataclass(frozen=True)
class ImageDef:
    name: str
    tag: str
    directory: Path | None  # None: the debootstrapped base

    def digest(self, mirror_uri: str | None = None) -> str:
        """The definition's hash. `mirror_uri` gives the older form, which hashed the mirror
        too: images labelled that way are still up to date (see `up_to_date`)."""
        prefix = f"{SUITE} {mirror_uri} minbase" if mirror_uri else f"{SUITE} minbase"
        h = hashlib.sha256(prefix.encode())
        if self.directory is not None:
            for path in sorted(self.directory.rglob("*")):
                if path.is_file():
                    h.update(path.relative_to(self.directory).as_posix().encode())
                    h.update(path.read_bytes())
        return h.hexdigest()[:16]

    def up_to_date(self, label: str | None, mirror_uri: str | None = None) -> bool:
        """Whether an image's label matches this definition. A label from before the mirror
        left the hash matches too when it names any mirror we know of (the override, the
        variable, apt's): those images were built from it, so nobody has to rebuild."""
        if label is None or label == self.digest():
            return label is not None
        known = {mirror_uri, os.environ.get(MIRROR_ENV), configured_mirror()}
        return any(label == self.digest(uri) for uri in known if uri)


def definitions() -> dict[str, ImageDef]:
    defs = {"base": ImageDef("base", BASE, None)}
    for d in sorted(IMAGES_DIR.iterdir()):
        if (d / "Dockerfile").is_file():
            defs[d.name] = ImageDef(d.name, f"sandboxd/{d.name}:{SUITE}", d)
    return defs


def _run(*argv: str, input_file: Path | None = None) -> str:
    with open(input_file, "rb") if input_file else open(os.devnull, "rb") as stdin:
        proc = subprocess.run(argv, stdin=stdin, capture_output=True, text=True)  # noqa: S603  # the image build's own argv; no shell
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} {argv[1]} failed: {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def current_label(tag: str) -> str | None:
    proc = subprocess.run(  # noqa: S603  # a fixed argv of ours
        [  # noqa: S607  # docker from PATH, as the operator runs it
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


def _build_base(image: ImageDef, source: str, log: list[str]) -> None:
    work = Path(tempfile.mkdtemp(prefix="sandboxd-rootfs-", dir="/var/tmp"))
    try:
        rootfs = work / "rootfs"
        log.append(f"debootstrap --variant=minbase {SUITE} from {source}")
        _run("debootstrap", "--variant=minbase", SUITE, str(rootfs), source)
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


def build(names: list[str] | None = None, mirror_uri: str | None = None) -> list[str]:
    """Build the named images (default all) and what they need; lines describing what happened.
    `mirror_uri` overrides the Debian mirror (else `mirror()` finds it)."""
    defs = definitions()
    wanted = names or list(defs)
    unknown = [n for n in wanted if n not in defs]
    if unknown:
        raise ValueError(f"no image definition {unknown}; have {sorted(defs)}")
    order = ["base"] + [n for n in wanted if n != "base"]
    log: list[str] = []
    for name in order:
        image = defs[name]
        if image.up_to_date(current_label(image.tag), mirror_uri):
            log.append(f"{image.tag}: up to date")
            continue
        if image.directory is None:
            _build_base(image, mirror(mirror_uri), log)
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
            else ("up to date" if image.up_to_date(label) else "out of date")
        )
        lines.append(f"{image.tag}  {state}")
    return lines


MOUNT_POINTS = ("workspace", "tmp", "dev", "proc", "run/sandboxd")


def export(name: str, dest: Path) -> str:
    """Unpack an image as a root filesystem for the nsjail backend (`backends.nsjail.rootfs`),
    so both backends can run the same userland; `/etc/sandboxd-image` names what it came from."""
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
