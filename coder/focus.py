"""Which definitions matter for a failing run: the functions on its tracebacks and the
definitions its failing tests call, each with a priority.

Why: the bug is rarely in the file a traceback ends in. When a test's `assert` fails, the last
frame is the test itself, and the buggy code is whatever the assertion line calls — maybe a
re-export of a re-export in a `src/` package. So the failing test functions are parsed (found
from pytest's node ids and from the traceback frames in test files), the names they use are
resolved with `coder.symbols`, and the definitions found are ranked:

  0  a frame of the traceback outside the tests (innermost first)
  1  what the failing statement (or any `assert`) of a failing test calls
  2  what else the failing tests use (their helpers and pytest fixtures included)
  3  what the definitions of rank 1 call in turn

A non-Python file a trace names as `path:line` (a JavaScript stack, a template) has no syntax
tree: the lines around the one named stand in for its definition, at rank 0 (1 in tests).
`coder.context` shows them in that order within its caps."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from coder.digest import TestDigest
from coder.edits import is_test_path
from coder.symbols import Definition, SymbolIndex

MAX_TESTS = 10  # failing test functions looked into
MAX_FOCUS = 60  # definitions ranked
_PYTEST_FRAME = re.compile(r"^(\S+?\.py):(\d+): ", re.MULTILINE)
_NATIVE_FRAME = re.compile(r'File "([^"]+?\.py)", line (\d+)')
_LINE_REF = re.compile(r"([\w./-]+\.\w+):(\d+)")  # other languages' `path:line[:col]`
LINES_AROUND = 15  # lines shown either side of a line a non-Python trace names


@dataclass(frozen=True)
class Focus:
    rank: int
    definition: Definition


PYTHON_FRAMES = (_PYTEST_FRAME, _NATIVE_FRAME)


def frames(
    text: str, files: dict[str, str], rxs: tuple[re.Pattern[str], ...] = PYTHON_FRAMES
) -> list[tuple[str, int]]:
    """(repository path, line) of every traceback frame in `text`, in order."""
    found: list[tuple[int, str, int]] = []
    for rx in rxs:
        for m in rx.finditer(text):
            raw = m.group(1).lstrip("./")
            path = raw if raw in files else next((p for p in files if raw.endswith("/" + p)), "")
            if path:
                found.append((m.start(), path, int(m.group(2))))
    return [(p, n) for _, p, n in sorted(found)]


def _test_node(index: SymbolIndex, test_id: str) -> Definition | None:
    """The function of a pytest node id (`path::Class::name[param]`) or a unittest id
    (`pkg.module.Class.name`)."""
    if "::" in test_id:
        path, *names = test_id.split("::")
        qual = ".".join(n.split("[")[0] for n in names)
        return index.module(path).defs.get(qual) if path in index.files else None
    parts = test_id.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        ref = index.find_module(".".join(parts[:cut]), "")
        if ref is not None and ref.path.endswith(".py"):
            return index.module(ref.path).defs.get(".".join(parts[cut:]))
    return None


def _function(index: SymbolIndex, d: Definition) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    return index.module(d.path).functions.get(d)


def _chains(node: ast.AST) -> list[list[str]]:
    """`a.b.c` and `a` as name chains, each maximal chain once, in source order."""
    inner: set[int] = set()
    out: list[list[str]] = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute) and id(sub) not in inner:
            chain: list[str] = []
            cur: ast.expr = sub
            while isinstance(cur, ast.Attribute):
                chain.insert(0, cur.attr)
                cur = cur.value
                inner.add(id(cur))
            if isinstance(cur, ast.Name):
                out.append([cur.id, *chain])
        elif isinstance(sub, ast.Name) and id(sub) not in inner and isinstance(sub.ctx, ast.Load):
            out.append([sub.id])
    return out


def _asserts(node: ast.AST) -> bool:
    """An `assert`, or a call of `self.assertEqual(...)`, `assert_called_with(...)` and kin."""
    if isinstance(node, ast.Assert):
        return True
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        func = node.value.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        return str(name).lower().startswith("assert")
    return False


def _sources(fn: ast.AST, names: set[str], rounds: int = 3) -> list[list[str]]:
    """The chains in what local `names` were assigned from (`actual = f(x)` before
    `assert actual == 3`), followed back `rounds` assignments."""
    out: list[list[str]] = []
    seen = set(names)
    for _ in range(rounds):
        found: set[str] = set()
        for node in ast.walk(fn):
            if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign | ast.For):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                value = node.iter if isinstance(node, ast.For) else node.value
            elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                targets, value = [node.optional_vars], node.context_expr
            else:
                continue
            bound = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            if value is not None and bound & names:
                for chain in _chains(value):
                    out.append(chain)
                    found.add(chain[0])
        names = found - seen
        seen |= found
        if not names:
            break
    return out


def _innermost(fn: ast.AST, line: int) -> ast.stmt | None:
    """The smallest statement of `fn` holding `line` (the failing line of a frame)."""
    best: ast.stmt | None = None
    for node in ast.walk(fn):
        if isinstance(node, ast.stmt) and node is not fn:
            end = node.end_lineno or node.lineno
            if node.lineno <= line <= end and (
                best is None or end - node.lineno < (best.end_lineno or best.lineno) - best.lineno
            ):
                best = node
    return best


class Finder:
    """Ranks the definitions that matter for one digest."""

    def __init__(self, files: dict[str, str], index: SymbolIndex | None = None) -> None:
        self.files = files
        self.index = index or SymbolIndex(files)
        self.ranked: dict[Definition, int] = {}

    def add(self, rank: int, d: Definition) -> bool:
        if d in self.ranked and self.ranked[d] <= rank:
            return False
        if len(self.ranked) >= MAX_FOCUS and d not in self.ranked:
            return False
        self.ranked[d] = rank
        return True

    def find(self, digest: TestDigest) -> list[Focus]:
        where = frames(digest.text, self.files)
        for path, line in reversed(where):
            if path.endswith(".py") and not is_test_path(path):
                d = self.index.enclosing(path, line)
                if d is not None:
                    self.add(0, d)
        for path, line in frames(digest.text, self.files, (_LINE_REF,)):
            if not path.endswith(".py"):  # no syntax tree: the lines around the one named
                start = max(1, line - LINES_AROUND)
                near = Definition(path, f"line {line}", "lines", start, line + LINES_AROUND)
                self.add(1 if is_test_path(path) else 0, near)
        tests: list[Definition] = []
        for test_id in digest.failing:
            d = _test_node(self.index, test_id)
            if d is not None and d not in tests:
                tests.append(d)
        for path, line in where:
            if is_test_path(path) and (d := self.index.enclosing(path, line)) and d not in tests:
                tests.append(d)
        for test in tests[:MAX_TESTS]:
            lines = [n for p, n in where if p == test.path and test.start <= n <= test.end]
            self.add(1, test)
            self._uses(test, lines, rank=1, depth=0)
        for d, rank in list(self.ranked.items()):
            if rank == 1 and not is_test_path(d.path) and d.kind == "def":
                self._uses(d, [], rank=3, depth=2)
        order = sorted(self.ranked.items(), key=lambda kv: kv[1])
        return [Focus(rank, d) for d, rank in order]

    def _uses(self, owner: Definition, lines: list[int], *, rank: int, depth: int) -> None:
        """Rank what `owner` uses: names on its failing lines and its `assert`s at `rank`, the
        rest at rank+1; its helpers and fixtures in the test files are followed too."""
        fn = _function(self.index, owner)
        if fn is None:
            return
        a = fn.args
        params = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
        local = set(params) | {
            n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
        }
        hot: list[list[str]] = []
        for line in lines:
            stmt = _innermost(fn, line)
            hot += _chains(stmt) if stmt is not None else []
        for node in ast.walk(fn):
            if _asserts(node):
                hot += _chains(node)
        hot += _sources(fn, {c[0] for c in hot if c[0] in local})
        classes: list[Definition] = []
        methods: list[tuple[int, str]] = []
        for stmt in fn.body:
            for chain in _chains(stmt):
                r = rank if chain in hot else rank + 1
                if chain[0] == "self" and "." in owner.qualname and len(chain) > 1:
                    own = owner.qualname.rsplit(".", 1)[0]  # a test class's own helper
                    helper = self.index.module(owner.path).defs.get(f"{own}.{chain[1]}")
                    if helper is not None and self.add(r, helper) and depth < 2:
                        self._uses(helper, [], rank=r, depth=depth + 1)
                if chain[0] in local:
                    methods += [(r, chain[1])] if len(chain) > 1 else []
                    continue
                for t in self.index.resolve_chain(owner.path, chain):
                    if not isinstance(t, Definition):
                        continue
                    if t.kind == "class":
                        classes.append(t)
                    if self.add(r, t) and is_test_path(t.path) and depth < 2:
                        self._uses(t, [], rank=r, depth=depth + 1)
        for name in params if depth < 2 else []:
            for fixture in self._fixtures(owner, name):
                if self.add(rank + 1, fixture):
                    self._uses(fixture, [], rank=rank + 1, depth=depth + 1)
        for r, attr in methods:
            for cls in classes:
                method = self.index.module(cls.path).defs.get(f"{cls.qualname}.{attr}")
                if method is not None:
                    self.add(r, method)

    def _fixtures(self, owner: Definition, name: str) -> list[Definition]:
        """A pytest fixture `name` for a test in `owner.path`: in its module or a conftest.py
        of its directory or a parent."""
        out: list[Definition] = []
        d = owner.path
        candidates = [owner.path]
        while "/" in d:
            d = d.rsplit("/", 1)[0]
            candidates.append(f"{d}/conftest.py")
        candidates.append("conftest.py")
        for path in candidates:
            if path in self.files:
                found = self.index.module(path).defs.get(name)
                if found is not None and found.kind == "def":
                    out.append(found)
                    break
        return out


def focus(digest: TestDigest, files: dict[str, str]) -> list[Focus]:
    """The definitions that matter for `digest`, best first."""
    return Finder(files).find(digest)
