"""The image build's Debian mirror comes from the host's apt sources (so the project names no
mirror of its own); these are sample apt configurations written to a temporary directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandboxd.backends.docker import images
from sandboxd.backends.docker.images import configured_mirror, mirror

KEY_BLOCK = """Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBGNSuites: bookworm
 -----END PGP PUBLIC KEY BLOCK-----
"""


def apt_dir(tmp_path: Path, main: str | None = None, **parts: str) -> Path:
    """An /etc/apt lookalike: `main` is sources.list, `parts` go to sources.list.d (the
    keyword's last underscore becomes the dot: `a_list` is `a.list`)."""
    root = tmp_path / "apt"
    (root / "sources.list.d").mkdir(parents=True)
    if main is not None:
        (root / "sources.list").write_text(main)
    for name, text in parts.items():
        stem, _, suffix = name.rpartition("_")
        (root / "sources.list.d" / f"{stem}.{suffix}").write_text(text)
    return root


@pytest.fixture(autouse=True)
def no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(images.MIRROR_ENV, raising=False)


def test_one_line_format_skips_comments_sources_and_other_suites(tmp_path: Path) -> None:
    main = (
        "# deb http://commented.test/debian bookworm main\n"
        "   #deb http://indented-comment.test/debian bookworm main\n"
        "deb-src http://src.test/debian bookworm main\n"
        "deb http://updates.test/debian bookworm-updates main\n"
        "deb http://contrib-only.test/debian bookworm contrib non-free\n"
        "deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://mirror.test/debian "
        "bookworm contrib main # the one\n"
        "deb http://second.test/debian bookworm main\n"
    )
    assert configured_mirror(apt_dir(tmp_path, main)) == "http://mirror.test/debian"


def test_one_line_options_with_spaces(tmp_path: Path) -> None:
    main = "deb [ arch=amd64,arm64 signed-by=/k.gpg ] https://mirror.test/debian/ bookworm main\n"
    assert configured_mirror(apt_dir(tmp_path, main)) == "https://mirror.test/debian/"


def test_deb822_stanzas(tmp_path: Path) -> None:
    sources = (
        "Types: deb\n"
        "URIs: http://disabled.test/debian\n"
        "Suites: bookworm\n"
        "Components: main\n"
        "Enabled: no\n"
        "\n"
        "Types: deb-src\n"
        "URIs: http://src.test/debian\n"
        "Suites: bookworm\n"
        "Components: main\n"
        "\n"
        "Types: deb\n"
        "URIs: http://security.test/debian-security\n"
        "Suites: bookworm-security\n"
        "Components: main\n"
        "\n"
        "types: deb-src deb\n"
        "# a comment inside the stanza does not end it\n"
        "# URIs: http://commented.test/debian\n"
        "uris: http://mirror.test/debian http://other.test/debian\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main contrib\n" + KEY_BLOCK
    )
    assert configured_mirror(apt_dir(tmp_path, debian_sources=sources)) == (
        "http://mirror.test/debian"
    )


def test_sources_list_first_then_the_parts_by_name(tmp_path: Path) -> None:
    deb822 = "Types: deb\nURIs: http://{}.test/debian\nSuites: bookworm\nComponents: main\n"
    parts = {
        "b_sources": deb822.format("b"),
        "a_list": "deb http://a.test/debian bookworm main\n",
        "c_list_disabled": "deb http://disabled.test/debian bookworm main\n",
        "0_list_save": "deb http://saved.test/debian bookworm main\n",
    }
    assert configured_mirror(apt_dir(tmp_path, None, **parts)) == "http://a.test/debian"
    first = apt_dir(tmp_path / "x", "deb http://main.test/debian bookworm main\n", **parts)
    assert configured_mirror(first) == "http://main.test/debian"


def test_schemes_debootstrap_cannot_fetch_are_skipped(tmp_path: Path) -> None:
    main = (
        "deb cdrom:[Debian GNU/Linux 12]/ bookworm main\n"
        "deb mirror+file:/etc/apt/mirrors.txt bookworm main\n"
        "deb file:/srv/mirror/debian bookworm main\n"
    )
    assert configured_mirror(apt_dir(tmp_path, main)) == "file:/srv/mirror/debian"


def test_nothing_configured_is_one_line_naming_the_override(tmp_path: Path) -> None:
    other = "deb http://x.test/other jammy main\n"
    empty = apt_dir(tmp_path, "# nothing here\n", other_list=other)
    with pytest.raises(ValueError, match="--mirror URL") as err:
        mirror(apt_dir=empty)
    message = str(err.value)
    assert "\n" not in message and "--mirror URL" in message and images.MIRROR_ENV in message


def test_override_then_variable_then_apt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    apt = apt_dir(tmp_path, "deb http://apt.test/debian bookworm main\n")
    assert mirror(apt_dir=apt) == "http://apt.test/debian"
    monkeypatch.setenv(images.MIRROR_ENV, "http://env.test/debian")
    assert mirror(apt_dir=apt) == "http://env.test/debian"
    assert mirror("http://cli.test/debian", apt_dir=apt) == "http://cli.test/debian"


def test_the_mirror_is_not_part_of_the_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    defs = images.definitions()
    before = {name: d.digest() for name, d in defs.items()}
    monkeypatch.setenv(images.MIRROR_ENV, "http://elsewhere.test/debian")
    assert {name: d.digest() for name, d in defs.items()} == before
    # An image labelled the older way (the mirror hashed in) still counts as up to date when
    # it names a mirror we know of, and only then.
    python = defs["python"]
    legacy = python.digest("http://elsewhere.test/debian")
    assert python.up_to_date(legacy) and python.up_to_date(before["python"])
    assert python.up_to_date(python.digest("http://cli.test/d"), "http://cli.test/d")
    assert not python.up_to_date(python.digest("http://unknown.test/debian"))
    assert not python.up_to_date(None)
