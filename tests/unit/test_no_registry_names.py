"""No project file names a public package registry or distribution mirror host.

The project must work air-gapped and must never send anyone's traffic to a public registry by
default: the image build takes its Debian mirror from the host's apt sources, and examples and
tests use reserved names (`example.com`, `*.example.org`, `.test`). This scans every tracked
file. The host names below are written as label tuples, so this file does not match itself.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: Hosts (and, with a leading "*", every subdomain of a domain) of public registries and
#: mirrors. Labels may be regular expressions (`[a-z]{2}` for a country mirror).
REGISTRY_HOSTS: list[tuple[str, ...]] = [
    # Python
    ("*", "pypi", "org"),
    ("*", "pypi", "io"),
    ("pypi", "python", "org"),
    ("*", "pythonhosted", "org"),
    ("*", "anaconda", "org"),
    ("repo", "anaconda", "com"),
    # Debian and Ubuntu archives
    *[(sub, "debian", "org") for sub in ("deb", "ftp", "security", "snapshot", "httpredir")],
    ("ftp", "[a-z]{2}", "debian", "org"),
    ("cdn-fastly", "deb", "debian", "org"),
    *[(sub, "ubuntu", "com") for sub in ("archive", "security", "ports")],
    ("[a-z]{2}", "archive", "ubuntu", "com"),
    ("*", "launchpadcontent", "net"),
    ("ppa", "launchpad", "net"),
    # other distributions
    ("dl-cdn", "alpinelinux", "org"),
    ("mirror", "centos", "org"),
    ("dl", "fedoraproject", "org"),
    ("deb", "nodesource", "com"),
    ("download", "docker", "com"),
    ("packages", "cloud", "google", "com"),
    # JavaScript
    ("*", "npmjs", "org"),
    ("*", "npmjs", "com"),
    ("*", "yarnpkg", "com"),
    ("registry", "npmmirror", "com"),
    ("npm", "pkg", "github", "com"),
    # other languages and container registries
    ("*", "crates", "io"),
    ("*", "rubygems", "org"),
    ("repo1", "maven", "org"),
    ("repo", "maven", "apache", "org"),
    ("proxy", "golang", "org"),
    ("sum", "golang", "org"),
    ("*", "packagist", "org"),
    ("api", "nuget", "org"),
    ("*", "cpan", "org"),
    ("registry-1", "docker", "io"),
    ("index", "docker", "io"),
    ("hub", "docker", "com"),
    ("*", "ghcr", "io"),
    ("*", "quay", "io"),
    ("*", "gcr", "io"),
]


def host_pattern(hosts: list[tuple[str, ...]]) -> re.Pattern[str]:
    alternatives = []
    for labels in hosts:
        any_sub = labels[0] == "*"
        body = r"\.".join(labels[1:] if any_sub else labels)
        alternatives.append(rf"(?:[a-z0-9-]+\.)*{body}" if any_sub else body)
    return re.compile(rf"(?<![a-z0-9-])(?:{'|'.join(alternatives)})(?![a-z0-9-])", re.IGNORECASE)


PATTERN = host_pattern(REGISTRY_HOSTS)


def offending_lines(root: Path) -> list[str]:
    """`file:line: text` for every line of a tracked file under `root` naming a registry host."""
    listed = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    found = []
    for name in sorted(filter(None, listed.decode().split("\0"))):
        path = root / name
        if path.is_symlink() or not path.is_file():
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if PATTERN.search(line):
                found.append(f"{name}:{number}: {line.strip()[:160]}")
    return found


def test_the_pattern_finds_registry_hosts_and_nothing_else() -> None:
    hits = [
        ".".join(("files", "pythonhosted", "org")),
        "https://" + ".".join(("pypi", "org")) + "/simple/",
        ".".join(("deb", "debian", "org")) + "/debian",
        ".".join(("ftp", "de", "debian", "org")),
        ".".join(("de", "archive", "ubuntu", "com")),
        ".".join(("registry", "npmjs", "org")),
        ".".join(("Registry", "YarnPkg", "com")),
        ".".join(("static", "crates", "io")),
    ]
    misses = [
        "pypi.test",
        "index.test:8080",
        "*.example.org",
        "example.com",
        "apt-get install docker.io",
        "the debian package",
        ".".join(("notpypi", "org")),
    ]
    assert [h for h in hits if not PATTERN.search(h)] == []
    assert [m for m in misses if PATTERN.search(m)] == []


@pytest.mark.skipif(
    shutil.which("git") is None or not (REPO / ".git").exists(), reason="not a git checkout"
)
def test_no_tracked_file_names_a_registry_host() -> None:
    found = offending_lines(REPO)
    assert found == [], "registry host names in project files:\n" + "\n".join(found)
