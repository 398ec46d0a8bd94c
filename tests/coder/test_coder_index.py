"""The derived setup recipe against a real package index: a `python -m http.server` "simple"
index of wheels built here, on a test host in a network namespace this test creates (veth to
the host), reached through the daemon's egress proxy with the run's allowlist. The index name
`index.test` resolves to that host for this daemon only; nothing else is ever targeted.

A repository declaring a runtime dependency, a test extra and (in its pytest configuration) a
plugin gets a venv and `pip install -e .[test]` and is solved; one naming a dependency the
index does not have, or an index that hangs, stops with `setup_failed` (pip's message, or
the timeout)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from coder.testing.harness import example, scripted, solve
from tests.daemon import Daemon
from tests.jail.test_download_cache import cache_tree
from tests.netns import NetHost, namespace_host, wheel

pytestmark = pytest.mark.network

#: The index's files, served as real indexes serve them: immutable, cacheable by pip.
SERVE = """
import functools, sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
class Handler(SimpleHTTPRequestHandler):
    def end_headers(self):
        if self.path.startswith("/packages/"):
            self.send_header("Cache-Control", "max-age=31536000, immutable")
        super().end_headers()
handler = functools.partial(Handler, directory=sys.argv[2])
ThreadingHTTPServer((sys.argv[1], 8080), handler).serve_forever()
"""
HANG = (
    "import socket, sys, time\n"
    "s = socket.create_server((sys.argv[1], 8081)); held = []\n"
    "while True:\n    held.append(s.accept())\n"
)


TINYCOV = "def pytest_addoption(parser):\n    parser.addoption('--cov', action='append')\n"


def simple_index(root: Path) -> Path:
    """A PEP 503 index: /simple/<name>/ links to /packages/<wheel>."""
    packages = root / "packages"
    packages.mkdir(parents=True)
    wheels = [
        wheel(packages, "tinydep", {"tinydep/__init__.py": "def one():\n    return 1\n"}, []),
        wheel(packages, "tinytestdep", {"tinytestdep/__init__.py": "READY = True\n"}, []),
        # the plugin `--cov` in a pytest configuration names: here a stand-in of that name
        wheel(packages, "pytest_cov", {"tinycov.py": TINYCOV}, [], "[pytest11]\ncov = tinycov\n"),
    ]
    for whl in wheels:
        page = root / "simple" / whl.name.split("-")[0].replace("_", "-")
        page.mkdir(parents=True)
        link = f'<a href="../../packages/{whl.name}">{whl.name}</a>'
        (page / "index.html").write_text(f"<html><body>{link}</body></html>\n")
    return root


@pytest.fixture(scope="module")
def index_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetHost]:
    index = simple_index(tmp_path_factory.mktemp("index"))

    def servers(inside: list[str], ip: str) -> list[list[str]]:
        python = [*inside, sys.executable]
        return [
            [*python, "-c", SERVE, ip, str(index)],
            [*python, "-c", HANG, ip],
        ]

    with namespace_host("cd", 214, servers, [8080, 8081]) as host:
        yield host


@pytest.fixture(scope="module")
def index_daemon(workdir: Path, index_host: NetHost) -> Iterator[Daemon]:
    d = Daemon(
        workdir,
        "coder-index",
        egress={"hosts": {"index.test": [index_host.ip]}},
        tenants={"nocache": {"download_cache_mib": 0}},
    )
    d.start()
    yield d
    assert d.stop() == 0, d.log.read_text()[-3000:]


PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "calc"
version = "0.1"
dependencies = [{deps}]

[project.optional-dependencies]
test = ["tinytestdep"]

[tool.setuptools]
py-modules = ["calc"]
"""


def declaring(tmp_path: Path, deps: str) -> Path:
    """The calculator, needing `tinydep` at run time and `tinytestdep` for its tests."""
    repo = example("calculator", tmp_path)
    (repo / "pyproject.toml").write_text(PYPROJECT.format(deps=deps))
    calc = repo / "calc.py"
    calc.write_text("import tinydep  # noqa: F401\n" + calc.read_text())
    test = repo / "tests" / "test_calc.py"
    test.write_text("import tinytestdep  # noqa: F401\n" + test.read_text())
    return repo


def index(host: NetHost, port: int = 8080) -> dict[str, object]:
    # index.test resolves to a private address: an IP rule must name it (README "Network")
    return {"index_url": f"http://index.test:{port}/simple/", "setup_allow": [f"{host.net}:{port}"]}


def test_a_derived_recipe_installs_what_the_repository_declares(
    index_daemon: Daemon, index_host: NetHost, tmp_path: Path
) -> None:
    repo = declaring(tmp_path, '"tinydep"')
    with scripted("fixed_first_try") as server:
        proc, result = solve(repo, server, index_daemon, **index(index_host))
    assert proc.returncode == 0, proc.stderr
    assert result["status"] == "fixed", result.get("setup") or result
    steps = [(s["step"], s["exit_code"]) for s in result["setup_steps"]]
    assert steps == [("venv", 0), ("build deps", 0), ("install", 0)]
    assert "-e '.[test]'" in result["setup_steps"][2]["command"]
    # The installs went through the tenant's download cache: the wheels are in pip's cache.
    cache = cache_tree(index_daemon, "default") / "pip"
    held = b"".join(f.read_bytes() for f in cache.rglob("*") if f.is_file())
    assert b"tinydep/__init__.py" in held and b"tinytestdep/__init__.py" in held


def test_a_tenant_without_a_download_cache_installs_without_one(
    index_daemon: Daemon, index_host: NetHost, tmp_path: Path
) -> None:
    repo = declaring(tmp_path, '"tinydep"')
    token = index_daemon.make_token("nocache", "run", "sandboxes")
    with scripted("fixed_first_try") as server:
        proc, result = solve(repo, server, index_daemon, sandboxd_token=token, **index(index_host))
    assert result["status"] == "fixed", result.get("setup") or proc.stderr
    assert not cache_tree(index_daemon, "nocache").parent.parent.exists()


def test_a_pytest_plugin_its_configuration_names_is_installed(
    index_daemon: Daemon, index_host: NetHost, tmp_path: Path
) -> None:
    repo = declaring(tmp_path, '"tinydep"')
    (repo / "pytest.ini").write_text("[pytest]\npythonpath = .\naddopts = --cov=calc\n")
    with scripted("fixed_first_try") as server:
        proc, result = solve(repo, server, index_daemon, **index(index_host))
    assert result["status"] == "fixed", result.get("setup") or proc.stderr
    assert result["setup_steps"][-1]["command"].endswith(" pytest-cov")


def test_a_dependency_the_index_lacks_is_a_setup_failure(
    index_daemon: Daemon, index_host: NetHost, tmp_path: Path
) -> None:
    repo = declaring(tmp_path, '"tinydep", "nosuchdep"')
    with scripted("none") as server:
        proc, result = solve(repo, server, index_daemon, **index(index_host))
        assert server.requests == []
    assert proc.returncode == 3 and result["status"] == "setup_failed", proc.stderr
    failure = result["setup"]
    assert failure["step"] == "install" and failure["exit_code"] == 1
    assert "No matching distribution found for nosuchdep" in failure["output_tail"]


def test_an_index_that_hangs_is_stopped_by_the_timeout(
    index_daemon: Daemon, index_host: NetHost, tmp_path: Path
) -> None:
    repo = declaring(tmp_path, '"tinydep"')
    with scripted("none") as server:
        proc, result = solve(
            repo, server, index_daemon, setup_timeout_s=8, **index(index_host, 8081)
        )
    assert proc.returncode == 3 and result["status"] == "setup_failed", proc.stderr
    failure = result["setup"]
    assert failure["step"] == "install" and failure["status"] == "timeout"
    assert "did not finish within 8s" in failure["reason"]
