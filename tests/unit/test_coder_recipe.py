"""The setup recipe derived from what a repository declares, and the package index its
installs may reach (read from pip's own configuration, never open network)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from coder.recipe import (
    BACKEND_REQUIRES,
    BACKEND_REQUIRES_FILE,
    VENV_COMMAND,
    declared,
    derived,
    recipe,
)
from coder.repo import SETUP_SCRIPT
from coder.setup import Index, pip_options, resolve_index

PYPROJECT = """
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"
[project]
name = "pkg"
version = "1"
dependencies = ["dep"]
[project.optional-dependencies]
tests = ["hypothesis"]
docs = ["sphinx"]
[dependency-groups]
lint = ["ruff"]
dev = ["pytest-mock", {include-group = "lint"}]
[tool.pytest.ini_options]
addopts = "--cov=pkg -n 2"
"""


def test_a_repository_that_declares_nothing_gets_no_recipe() -> None:
    assert recipe({"calc.py": "", "pytest.ini": "[pytest]\n"}, None, pip_options()) == []


def test_a_pyproject_of_tool_settings_only_is_not_a_project() -> None:
    assert recipe({"pyproject.toml": "[tool.ruff]\nline-length = 99\n"}, None, []) == []
    poetry = '[build-system]\nrequires = ["poetry-core"]\n[tool.poetry]\nname = "p"\n'
    assert declared({"pyproject.toml": poetry}).installable


def test_the_owner_and_the_user_come_first() -> None:
    files = {SETUP_SCRIPT: "pip install x\n", "pyproject.toml": PYPROJECT}
    assert [s.command for s in recipe(files, None, [])] == [f"bash {SETUP_SCRIPT}"]
    assert [s.command for s in recipe(files, "make env", [])] == ["make env"]


def test_pyproject_extras_groups_and_plugins() -> None:
    found = declared({"pyproject.toml": PYPROJECT})
    assert found.installable and found.extras == ["tests"]
    assert found.build_requires == ["hatchling"]
    assert found.requirements == ["pytest-mock", "ruff", "pytest-cov", "pytest-xdist"]


def test_setup_cfg_requirements_files_and_tox() -> None:
    files = {
        "setup.py": "from setuptools import setup\nsetup()\n",
        "setup.cfg": "[metadata]\nname = p\n[options.extras_require]\ntesting = pytest\n"
        "[tool:pytest]\naddopts = --timeout=5\n",
        "requirements.txt": "dep\n",
        "requirements-docs.txt": "sphinx\n",
        "requirements/test.txt": "mock\n",
        "tox.ini": "[testenv]\ndeps =\n    freezegun\n    -rrequirements.txt\n    {posargs}\n",
    }
    found = declared(files)
    assert found.installable and found.extras == ["testing"]
    assert found.requirement_files == ["requirements.txt", "requirements/test.txt"]
    assert found.requirements == ["freezegun", "pytest-timeout"]


def test_the_derived_steps_quote_everything() -> None:
    files = {"pyproject.toml": PYPROJECT, "requirements-dev.txt": "x\n"}
    steps = derived(files, pip_options())
    assert [s.name for s in steps] == ["venv", "build deps", "install"]
    assert steps[0].command == VENV_COMMAND and not steps[0].network
    install = shlex.split(steps[2].command)
    assert install[:3] == [".coder-venv/bin/python", "-m", "pip"] and steps[2].network
    assert install[4:8] == ["--timeout", "30", "--retries", "2"]
    assert "-e" in install and ".[tests]" in install and "requirements-dev.txt" in install
    hostile = {"requirements.txt": "", "tox.ini": "[testenv]\ndeps = x; rm -rf /\n"}
    assert "'x; rm -rf /'" in derived(hostile, [])[-1].command


def test_an_index_is_allowed_by_host_and_port() -> None:
    index = Index(["http://mirror.test:3141/root/mirror/+simple/", "https://extra.test/simple"])
    assert index.rules() == ["mirror.test:3141", "extra.test:443"]
    env = index.env()
    assert env["PIP_INDEX_URL"] == "http://mirror.test:3141/root/mirror/+simple/"
    assert env["PIP_EXTRA_INDEX_URL"] == "https://extra.test/simple"
    assert env["PIP_TRUSTED_HOST"] == "mirror.test"  # plain http: pip must be told


@pytest.fixture
def pip_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("PIP_"):
            monkeypatch.delenv(name)
    config = tmp_path / "pip.conf"
    config.write_text(
        "[global]\nindex-url = http://mirror.test/simple\n"
        "extra-index-url = file:///opt/wheels https://extra.test/simple\n"
    )
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    return monkeypatch


def test_the_index_is_read_from_pips_configuration(pip_env: pytest.MonkeyPatch) -> None:
    index = resolve_index(None)
    assert index.urls == ["http://mirror.test/simple", "https://extra.test/simple"]  # no file:
    pip_env.setenv("PIP_INDEX_URL", "https://env.test/simple")
    assert resolve_index(None).urls[0] == "https://env.test/simple"
    assert resolve_index("http://setting.test/simple").urls == ["http://setting.test/simple"]


def test_index_credentials_stay_on_this_host(pip_env: pytest.MonkeyPatch) -> None:
    pip_env.setenv("PIP_INDEX_URL", "https://user:s3cret@private.test:8443/simple")
    index = resolve_index(None)
    assert index.urls[0] == "https://private.test:8443/simple"
    assert "s3cret" not in str(index.env()) and index.rules()[0] == "private.test:8443"


def test_an_extra_that_brings_pytest_is_the_test_extra() -> None:
    """idna names its test dependencies only in `all`; a named test extra still wins."""
    only_all = '[project]\nname = "x"\n[project.optional-dependencies]\n'
    only_all += 'all = ["ruff", "pytest >= 8", "hypothesis"]\ndocs = ["sphinx"]\n'
    assert declared({"pyproject.toml": only_all}).extras == ["all"]
    named = only_all + 'test = ["pytest"]\n'
    assert declared({"pyproject.toml": named}).extras == ["test"]
    cfg = "[metadata]\nname = x\n[options.extras_require]\ncheck =\n    pytest\n    tomli\n"
    assert declared({"setup.cfg": cfg}).extras == ["check"]


def test_setuptools_is_built_with_its_own_dependencies() -> None:
    """In a venv that sees the system's packages, setuptools >= 77 would import Debian's
    older `packaging`: its `core` extra installs the one it needs beside it."""
    toml = '[build-system]\nrequires = ["setuptools >= 77.0", "Setuptools_scm[toml]>=8", "wheel"]\n'
    found = declared({"pyproject.toml": toml})
    assert found.build_requires == ["setuptools[core] >= 77.0", "Setuptools_scm[toml]>=8", "wheel"]
    kept = declared({"pyproject.toml": '[build-system]\nrequires = ["setuptools[core]>=80"]\n'})
    assert kept.build_requires == ["setuptools[core]>=80"]
    bare = declared({"pyproject.toml": '[build-system]\nrequires = ["setuptools", "wheel"]\n'})
    assert bare.build_requires == ["setuptools", "wheel"]


def test_only_the_requirements_files_the_tests_need() -> None:
    """wcwidth 0.9.5: tox installs `requirements-tests39.txt`; its release tooling's files pin
    another `packaging`, and installing them all together is a conflict pip refuses."""
    files = {
        "setup.py": "from setuptools import setup\nsetup()\n",
        "requirements-tests39.txt": "packaging==25.0\npytest==8.4.2\n",
        "requirements-develop.txt": "blessed\n",
        "requirements-update.txt": "python-dateutil==3.0.0\n",
        "requirements-wheels.txt": "packaging==26.3\n",
        "requirements-docs.in": "sphinx\n",
        "tox.ini": "[testenv]\ndeps = -r {toxinidir}/requirements-tests39.txt\n  setuptools\n",
    }
    found = declared(files)
    assert found.requirement_files == ["requirements-develop.txt", "requirements-tests39.txt"]
    assert found.requirements == ["setuptools"]
    # tox's word counts whatever the file is called; a type checker's pins are not the tests'
    named = {**files, "tox.ini": "[testenv]\ndeps = --requirement=requirements-wheels.txt\n"}
    assert declared(named).requirement_files == [
        "requirements-develop.txt",
        "requirements-tests39.txt",
        "requirements-wheels.txt",
    ]
    mypy = {"pyproject.toml": PYPROJECT, "requirements-mypy.txt": "mypy==2.4.0\n"}
    assert declared(mypy).requirement_files == []
    # nothing named for tests: every file but the docs', as before
    other = {"setup.py": "", "requirements/base.txt": "x\n", "requirements/docs.txt": "y\n"}
    assert declared(other).requirement_files == ["requirements/base.txt"]


BACKEND = """
print("noise a backend prints while it works")
def get_requires_for_build_wheel(config_settings=None):
    return ["wheel-only"]
"""


def test_the_build_backend_is_asked_what_else_it_needs(tmp_path: Path) -> None:
    """attrs 26.1: hatchling builds it editable only with `editables`, which it names only
    when asked (PEP 517); pip asks only under build isolation, which the install runs without."""
    steps = derived({"pyproject.toml": PYPROJECT}, [])
    build = steps[1].command
    assert steps[1].name == "build deps" and shlex.quote(BACKEND_REQUIRES) in build
    assert build.endswith(f"-r {BACKEND_REQUIRES_FILE}; }}")
    # the snippet itself, on a backend in the tree (backend-path), printing as it works
    (tmp_path / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\nbuild-backend = "inner:api"\nbackend-path = ["b"]\n'
    )
    (tmp_path / "b").mkdir()
    editable = "\n    def get_requires_for_build_editable(c=None):\n        return ['x>=1', 'y']\n"
    (tmp_path / "b" / "inner.py").write_text(BACKEND + "class api:" + editable)
    out = tmp_path / "needs.txt"
    run = [sys.executable, "-c", BACKEND_REQUIRES, str(out)]
    proc = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == "x>=1\ny\n" and "noise" not in proc.stdout
    # a backend without the editable hook: the wheel's requirements
    (tmp_path / "b" / "inner.py").write_text(BACKEND + "class api:\n    pass\n")
    (tmp_path / "pyproject.toml").write_text(
        '[build-system]\nbuild-backend = "inner"\nbackend-path = ["b"]\n'
    )
    proc = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == "wheel-only\n"
