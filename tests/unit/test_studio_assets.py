"""The Studio's shipped files: the vendored modules are the pinned packages' (their manifest
matches the bytes and the lockfile's versions), the UI's own code never turns data into
markup, and the page loads no script but its own files."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from sandboxd.http import ui

UI = Path(ui.__file__).resolve().parents[1] / "ui"
ASSETS = UI / "assets"
OWN_JS = sorted(p for p in ASSETS.rglob("*.js") if "vendor" not in p.parts)


def test_vendored_modules_match_their_manifest_and_the_lockfile() -> None:
    lock = json.loads((UI / "package-lock.json").read_text())
    pinned = json.loads((UI / "package.json").read_text())["dependencies"]
    lines = (ASSETS / "vendor" / "MANIFEST.txt").read_text().splitlines()
    assert len(lines) == 3
    for line in lines:
        digest, name, package = line.split("  ")
        pkg, version = package.rsplit("@", 1)
        data = (ASSETS / "vendor" / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, f"{name} differs from vendor.mjs's copy"
        assert lock["packages"][f"node_modules/{pkg}"]["version"] == version == pinned[pkg]
        assert b'from"preact"' not in data  # bare imports were rewritten to relative ones


@pytest.mark.parametrize("path", OWN_JS, ids=lambda p: p.name)
def test_the_studio_code_never_renders_markup(path: Path) -> None:
    code = path.read_text()
    for sink in (
        "dangerouslySetInnerHTML",
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "localStorage",
        "document.cookie",
    ):
        assert sink not in code, f"{path.name} uses {sink}"
    # a link's target is always built by api.href (the UI root + a path), never raw data
    assert all(t.startswith("href(") for t in re.findall(r"href=\$\{([^}]*)", code)), path.name


def test_every_module_import_is_relative_and_shipped() -> None:
    for path in OWN_JS:
        for target in re.findall(r'from "([^"]+)"', path.read_text()):
            assert target.startswith("."), f"{path.name} imports {target}"
            assert (path.parent / target).resolve().is_file(), f"{path.name}: {target} missing"


def test_the_page_has_no_inline_script_and_assets_load() -> None:
    assets = ui.load_assets()
    page = assets["index.html"].decode()
    assert re.findall(r"<script[^>]*>", page) == ['<script type="module" src="assets/app.js">']
    assert "style=" not in page
    assert {"assets/app.js", "assets/studio.css", "assets/vendor/preact.js"} <= set(assets)


@pytest.mark.parametrize(
    ("tail", "base"),
    [("", "./"), ("runs", "./"), ("runs/run_1", "./../"), ("a/b/c", "./../../")],
)
def test_base_href_points_at_the_ui_root(tail: str, base: str) -> None:
    assert ui.base_href(tail) == base
