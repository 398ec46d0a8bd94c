"""The setup recipe of a repository: what to run in the sandbox before its tests can run.

Why: a repository copied into a sandbox whose Python has only the standard library and
Debian's pytest cannot import its own dependencies, so its tests fail before and after any fix.
The recipe is, in order of authority:
1. the `setup` setting (a command: the user's word for this solve);
2. `.coder/setup.sh` when the repository has one (its owner's word);
3. else one derived from what the repository declares: a virtual environment inside the
   workspace (`--system-site-packages`, so Debian's pytest, setuptools and wheel stay
   available and need no download), then one pip install of the project itself with its test
   extras (`-e .[test]`, so setuptools-scm and friends write their generated files), the
   `requirements*.txt` its tests need, its test dependency groups, its `tox.ini` test deps
   and the pytest plugins its configuration names (`--cov` needs pytest-cov).
A repository that declares nothing gets no recipe: its tests run as they are.
"""

from __future__ import annotations

import configparser
import contextlib
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from typing import Any

from coder.repo import SETUP_SCRIPT
from coder.sandbox import VENV

TEST_EXTRAS = ("test", "tests", "testing", "dev")
#: Options in a pytest configuration, and the plugin (a distribution name) that defines each.
PLUGIN_OPTIONS = {
    "--cov": "pytest-cov",
    "--numprocesses": "pytest-xdist",
    "-n": "pytest-xdist",
    "--timeout": "pytest-timeout",
    "--benchmark": "pytest-benchmark",
    "--doctest-plus": "pytest-doctestplus",
    "--mypy": "pytest-mypy",
}
#: The venv: the system's packages stay visible (pip, setuptools, wheel and pytest need no
#: download), and `pytest` in it runs the venv's Python (Debian's /usr/bin/pytest would run
#: the system's, which sees none of what the install put in the venv).
VENV_COMMAND = (
    f"python3 -m venv --system-site-packages --without-pip {VENV} && "
    f'printf \'#!/bin/sh\\nexec "$(dirname "$0")/python" -m pytest "$@"\\n\' '
    f"> {VENV}/bin/pytest && chmod +x {VENV}/bin/pytest"
)
#: Asks the repository's build backend what else it needs to build it editable (PEP 517's
#: `get_requires_for_build_editable`, else `..._wheel`), and writes one requirement a line to
#: the file its first argument names. pip does this itself with build isolation; the install
#: runs without (so a build needs no download of what the system has), so it must be asked:
#: hatchling's editable build needs `editables`, and says so only here.
BACKEND_REQUIRES = """
import contextlib, importlib, os, sys, tomllib
out = sys.argv[1]
try:
    with open("pyproject.toml", "rb") as f:
        system = tomllib.load(f).get("build-system", {})
except FileNotFoundError:
    system = {}
name = system.get("build-backend", "setuptools.build_meta:__legacy__")
sys.path[:0] = [os.path.abspath(p) for p in system.get("backend-path", [])]
module, _, attrs = name.partition(":")
with contextlib.redirect_stdout(sys.stderr):
    backend = importlib.import_module(module)
    for attr in filter(None, attrs.split(".")):
        backend = getattr(backend, attr)
    hook = getattr(backend, "get_requires_for_build_editable", None) or getattr(
        backend, "get_requires_for_build_wheel", None
    )
    found = hook({}) if hook else []
with open(out, "w") as f:
    f.write("".join(r + "\\n" for r in found))
print("the build backend", name, "needs:", *found or ["nothing more"], file=sys.stderr)
"""
BACKEND_REQUIRES_FILE = f"{VENV}/backend-requires.txt"
_REQUIREMENTS = re.compile(r"^(?:[\w.-]*requirements[\w.-]*\.txt|requirements/[\w.-]+\.txt)$")
_NOT_FOR_TESTS = re.compile(r"doc|lint|release|publish|mypy|typing|wheel|update", re.IGNORECASE)
_FOR_TESTS = re.compile(r"test|dev", re.IGNORECASE)
#: A requirements file in tox's deps: `-rfile`, `-r file`, `--requirement=file`.
_TOX_REQUIREMENT = re.compile(r"^(?:-r|--requirement)[\s=]*(?:\{toxinidir\}/)?(\S+)$")


@dataclass
class Step:
    """One command of the recipe. `network`: it installs, so it runs with the index allowed."""

    name: str
    command: str
    network: bool = False


@dataclass
class Declared:
    """What a repository declares about its environment."""

    installable: bool = False
    extras: list[str] = field(default_factory=list)
    requirement_files: list[str] = field(default_factory=list)
    requirements: list[str] = field(default_factory=list)
    build_requires: list[str] = field(default_factory=list)

    @property
    def anything(self) -> bool:
        return self.installable or bool(self.requirement_files or self.requirements)


def _toml(text: str | None) -> dict[str, Any]:
    try:
        return tomllib.loads(text) if text else {}
    except tomllib.TOMLDecodeError:
        return {}


def _ini(text: str | None) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    with contextlib.suppress(configparser.Error):
        parser.read_string(text or "")
    return parser


def _requirement(entry: object) -> str | None:
    """A requirement string fit for pip's command line; never an option."""
    if not isinstance(entry, str):
        return None
    entry = entry.split("#", 1)[0].strip()
    return entry if entry and not entry.startswith("-") and "{" not in entry else None


_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?")


def _name(requirement: str) -> str:
    """A requirement's project name, normalised (PEP 503)."""
    found = _NAME.match(requirement)
    return re.sub(r"[-_.]+", "-", found.group(1)).lower() if found else ""


def _with_its_dependencies(requirement: str) -> str:
    """setuptools vendors what it needs, but in a venv that sees the system's packages it
    imports the system's `packaging` instead (too old for setuptools >= 77 on Debian 12):
    when a version is asked for (so a newer setuptools is installed), its `core` extra names
    those dependencies, and pip installs them beside it. A bare `setuptools` is the system's."""
    found = _NAME.match(requirement)
    versioned = found is not None and requirement[found.end() :].strip() != ""
    if found and versioned and _name(requirement) == "setuptools" and not found.group(2):
        return f"{found.group(1)}[core]{requirement[found.end(1) :]}"
    return requirement


def _test_extras(extras: dict[str, list[str]]) -> list[str]:
    """The extras named for tests; else those that bring pytest (e.g. idna's `all`)."""
    named = [e for e in TEST_EXTRAS if e in extras]
    if named:
        return named
    return [
        e
        for e, reqs in extras.items()
        if any(_name(r) == "pytest" for r in reqs if isinstance(r, str))
    ]


def _groups(project: dict[str, Any]) -> list[str]:
    """The test dependency groups (PEP 735), their includes resolved one level."""
    groups = project.get("dependency-groups", {})
    out: list[str] = []
    for name in TEST_EXTRAS:
        for entry in groups.get(name, []) if isinstance(groups, dict) else []:
            if isinstance(entry, dict) and isinstance(entry.get("include-group"), str):
                out += [e for e in groups.get(entry["include-group"], []) if isinstance(e, str)]
            elif isinstance(entry, str):
                out.append(entry)
    return out


_PYTEST_INI = (("pytest.ini", "pytest"), ("tox.ini", "pytest"), ("setup.cfg", "tool:pytest"))


def _split(text: str) -> list[str]:
    try:
        return shlex.split(text, comments=True)
    except ValueError:
        return text.split()


def _addopts(files: dict[str, str], pyproject: dict[str, Any]) -> list[str]:
    """The options the repository's pytest configuration adds to every run."""
    ini = pyproject.get("tool", {}).get("pytest", {}).get("ini_options", {})
    raw = ini.get("addopts", "") if isinstance(ini, dict) else ""
    opts = _split(" ".join(map(str, raw)) if isinstance(raw, list) else str(raw))
    for name, section in _PYTEST_INI:
        parser = _ini(files.get(name))
        if parser.has_option(section, "addopts"):
            opts += _split(parser.get(section, "addopts"))
    return opts


def _plugins(opts: list[str]) -> list[str]:
    found = []
    for opt in opts:
        name = opt.split("=", 1)[0]
        if name in PLUGIN_OPTIONS or (name.startswith("--benchmark") and name != "--benchmark"):
            found.append(PLUGIN_OPTIONS.get(name, "pytest-benchmark"))
    return list(dict.fromkeys(found))


def _requirement_files(files: dict[str, str], tox_deps: list[str]) -> list[str]:
    """The requirements files the tests need. Those tox's test environment names, the plain
    `requirements.txt` and those named for tests or development, when there are any: a
    repository's other files pin what its release or table-update tooling needs, often in
    versions that conflict with its test pins (wcwidth's `requirements-wheels.txt` and
    `requirements-tests39.txt` pin two `packaging`s). Else every requirements file but those
    for docs, linters, type checkers or releases."""
    found = sorted(p for p in files if _REQUIREMENTS.match(p))
    named = {m.group(1) for d in tox_deps if (m := _TOX_REQUIREMENT.match(d.strip()))}
    chosen = [
        p
        for p in found
        if p in named
        or p == "requirements.txt"
        or (_FOR_TESTS.search(p) and not _NOT_FOR_TESTS.search(p))
    ]
    return chosen or [p for p in found if not _NOT_FOR_TESTS.search(p)]


def declared(files: dict[str, str]) -> Declared:
    """Read what `files` (the repository's text files by path) declare."""
    out = Declared()
    pyproject = _toml(files.get("pyproject.toml"))
    project = pyproject.get("project", {})
    out.installable = (
        "project" in pyproject
        or "build-system" in pyproject  # e.g. poetry's, whose metadata is its own
        or "setup.py" in files
        or _ini(files.get("setup.cfg")).has_section("metadata")
    )
    extras = dict(project.get("optional-dependencies", {}) if isinstance(project, dict) else {})
    cfg = _ini(files.get("setup.cfg"))
    if cfg.has_section("options.extras_require"):
        for name, value in cfg.items("options.extras_require"):
            extras.setdefault(name, value.splitlines())
    out.extras = _test_extras(extras if isinstance(extras, dict) else {})
    build = pyproject.get("build-system", {}).get("requires", ["setuptools", "wheel"])
    build_requires = [r for r in map(_requirement, build) if r] if out.installable else []
    out.build_requires = [_with_its_dependencies(r) for r in build_requires]
    tox = _ini(files.get("tox.ini"))
    tox_deps = (
        tox.get("testenv", "deps", fallback="").splitlines() if tox.has_section("testenv") else []
    )
    out.requirement_files = _requirement_files(files, tox_deps)
    wanted = _groups(pyproject) + tox_deps + _plugins(_addopts(files, pyproject))
    out.requirements = list(dict.fromkeys(r for r in map(_requirement, wanted) if r))
    return out


def derived(files: dict[str, str], pip_options: list[str]) -> list[Step]:
    """The recipe derived from `files`: a venv and one install, or nothing to do."""
    found = declared(files)
    if not found.anything:
        return []
    pip = f"{VENV}/bin/python -m pip install " + " ".join(map(shlex.quote, pip_options))
    steps = [Step("venv", VENV_COMMAND)]
    if found.build_requires:  # mostly met by the system's setuptools and wheel already
        build = f"{pip} " + " ".join(map(shlex.quote, found.build_requires))
        ask = f"{VENV}/bin/python -c {shlex.quote(BACKEND_REQUIRES)} {BACKEND_REQUIRES_FILE}"
        more = f"{{ [ ! -s {BACKEND_REQUIRES_FILE} ] || {pip} -r {BACKEND_REQUIRES_FILE}; }}"
        steps.append(Step("build deps", f"{build} && {ask} 1>&2 && {more}", True))
    args: list[str] = []
    if found.installable:
        extras = f"[{','.join(found.extras)}]" if found.extras else ""
        args += ["--no-build-isolation", "-e", f".{extras}"]
    for path in found.requirement_files:
        args += ["-r", path]
    args += found.requirements
    steps.append(Step("install", f"{pip} " + " ".join(map(shlex.quote, args)), True))
    return steps


def recipe(files: dict[str, str], setup: str | None, pip_options: list[str]) -> list[Step]:
    """The steps to prepare the sandbox for the repository whose text files are `files`."""
    if setup:
        return [Step("setup", setup, True)]
    if SETUP_SCRIPT in files:
        return [Step(SETUP_SCRIPT, f"bash {SETUP_SCRIPT}", True)]
    return derived(files, pip_options)
