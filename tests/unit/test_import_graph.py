"""The architecture, checked from the imports: http → service → backends → host, one way.

Read from the source with `ast` (every import counts, those under TYPE_CHECKING and inside
functions too), so a shortcut back up a layer fails here before it becomes a habit.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("sandboxd", "coder")
IMPLEMENTATIONS = ("sandboxd.backends.nsjail", "sandboxd.backends.docker", "sandboxd.backends.fake")
#: module prefix -> prefixes it must never import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "sandboxd.backends.host": (
        "sandboxd.backends.base",
        "sandboxd.backends.fake",
        "sandboxd.backends.registry",
        "sandboxd.backends.nsjail",
        "sandboxd.backends.docker",
        "sandboxd.service",
        "sandboxd.http",
        "sandboxd.cli",
    ),
    "sandboxd.backends": ("sandboxd.service", "sandboxd.http", "sandboxd.cli"),
    # above the seam, backends are reached through base and the registry only
    "sandboxd.service": ("sandboxd.http", "sandboxd.cli", *IMPLEMENTATIONS),
    "sandboxd.http": ("sandboxd.cli", *IMPLEMENTATIONS),
    # the vocabulary sits below everything (settings may read the backends' own settings)
    "sandboxd.models": ("sandboxd.service", "sandboxd.http", "sandboxd.backends", "sandboxd.cli"),
    "sandboxd.errors": ("sandboxd.service", "sandboxd.http", "sandboxd.backends", "sandboxd.cli"),
}
VOCABULARY_MAY = ("sandboxd.models", "sandboxd.netrules", "sandboxd.errors")
INTEGRATIONS = "sandboxd.integrations"
CLIENT_MAY = ("sandboxd.client", "sandboxd.models", "sandboxd.errors", "sandboxd.local_token")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = modules()


def imports(name: str) -> Iterator[str]:
    """The project modules `name` imports (a `from pkg import mod` names the module)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


GRAPH = {name: set(imports(name)) for name in MODULES}


def _under(name: str, prefix: str) -> bool:
    return name == prefix.rstrip(".") or name.startswith(
        prefix if prefix.endswith(".") else prefix + "."
    )


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_layer_imports_one_above_it(layer: str) -> None:
    bad = sorted(
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if _under(name, layer)
        for target in targets
        if any(_under(target, f) for f in FORBIDDEN[layer])
    )
    assert bad == []


def test_no_handler_module_imports_another() -> None:
    """What two resources share lives below them (request.py, sse.py, the service layer)."""
    handlers = {f"sandboxd.http.{name}" for name in ("runs", "sandboxes", "snapshots")}
    assert {n: GRAPH[n] & handlers for n in handlers} == {n: set() for n in handlers}


def test_jailside_programs_import_nothing_of_ours() -> None:
    """Their text runs inside a jail, where sandboxd is not installed."""
    bad = {n: t for n, t in GRAPH.items() if _under(n, "sandboxd.backends.jailside") and t}
    assert bad == {}


def test_clients_see_only_the_wire() -> None:
    """The client, the integrations (MCP, AutoGen) and coder talk to the daemon over HTTP:
    models, errors and the token file (an integration may use its siblings)."""
    bad = sorted(
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if name == "sandboxd.client" or _under(name, "coder") or _under(name, INTEGRATIONS)
        for target in targets
        if _under(target, "sandboxd")
        and not any(_under(target, ok) for ok in (*CLIENT_MAY, INTEGRATIONS))
        and not (_under(name, "coder.testing") or name == "coder.sandbox")
    )
    assert bad == []


def test_no_import_cycles() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in GRAPH:
        if name not in index:
            visit(name)
    assert cycles == []
