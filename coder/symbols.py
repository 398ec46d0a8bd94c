"""A symbol index over the repository's Python files, so the writer is shown the definitions
a failing test calls, wherever the imports put them.

Why its own resolver and not `importlib`: the code is untrusted and not installed here; only
its text is at hand. So a module name is found the way `sys.path` would find it in the common
layouts — the repository root, `src/`, the importing file's own directory and its parents (as
pytest inserts them) — and a name is followed through `import a.b as m`, `from pkg import
module`, `from .x import y`, package `__init__` re-exports and `*` imports, as deep as the
chain goes (bounded against cycles). Modules are parsed lazily and once; a file that does not
parse simply has no symbols."""

from __future__ import annotations

import ast
import time
from collections import OrderedDict
from dataclasses import dataclass, field

MAX_DEPTH = 12  # links followed from one name to its definition (re-export chains, aliases)


PARSE_CACHE_CHARS = 4_000_000  # source characters whose trees are kept (a few hundred MB at most)
_trees: OrderedDict[str, ast.Module | None] = OrderedDict()
_cached_chars = 0


def parse(text: str) -> ast.Module | None:
    """`text`'s syntax tree, or None; cached by content (least recently used out first,
    `PARSE_CACHE_CHARS` in all), so a file is parsed once per solve however many turns show
    it. The trees are only read, never changed."""
    global _cached_chars
    if text in _trees:
        _trees.move_to_end(text)
        return _trees[text]
    try:
        tree: ast.Module | None = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        tree = None
    if len(text) <= PARSE_CACHE_CHARS:
        _trees[text] = tree
        _cached_chars += len(text)
        while _cached_chars > PARSE_CACHE_CHARS:
            old, _ = _trees.popitem(last=False)
            _cached_chars -= len(old)
    return tree


@dataclass(frozen=True)
class Definition:
    """A def, class or top-level assignment: where it is (1-based lines, decorators in)."""

    path: str
    qualname: str
    kind: str  # "def" | "class" | "assign"
    start: int
    end: int


@dataclass(frozen=True)
class ModuleRef:
    """A module: a .py file, or a package directory (`a/b/`) when it has no `__init__.py`."""

    path: str


Target = Definition | ModuleRef


@dataclass
class Module:
    path: str
    tree: ast.Module | None
    defs: dict[str, Definition] = field(default_factory=dict)
    #: Every def and class in order, redefinitions too (the outline of a long file).
    every: list[Definition] = field(default_factory=list)
    #: The syntax node of each function in `defs`.
    functions: dict[Definition, ast.FunctionDef | ast.AsyncFunctionDef] = field(
        default_factory=dict
    )
    #: local name -> (absolute dotted module or "path:" + a resolved module path, attribute)
    bindings: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    stars: list[str] = field(default_factory=list)


def _span(node: ast.stmt) -> tuple[int, int]:
    decorators = getattr(node, "decorator_list", [])
    start = min([node.lineno] + [d.lineno for d in decorators])
    return start, node.end_lineno or node.lineno


def _top_statements(body: list[ast.stmt]) -> list[ast.stmt]:
    """Module-level statements, looking into `if`/`try` blocks (fallback definitions)."""
    out: list[ast.stmt] = []
    for node in body:
        if isinstance(node, ast.If):
            out += _top_statements(node.body) + _top_statements(node.orelse)
        elif isinstance(node, ast.Try):
            out += _top_statements(node.body)
            for handler in node.handlers:
                out += _top_statements(handler.body)
            out += _top_statements(node.orelse) + _top_statements(node.finalbody)
        else:
            out.append(node)
    return out


class SymbolIndex:
    """Definitions and imports of the repository's .py files (`files`: path -> text)."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files
        self.dirs: set[str] = {""}
        for path in files:
            if path.endswith(".py"):
                parts = path.split("/")[:-1]
                for i in range(1, len(parts) + 1):
                    self.dirs.add("/".join(parts[:i]) + "/")
        self._modules: dict[str, Module] = {}
        self._found: dict[tuple[str, str], ModuleRef | None] = {}

    # -- modules -----------------------------------------------------------------------------

    def module(self, path: str) -> Module:
        """The parsed module at `path` (an empty one for text that does not parse)."""
        if path not in self._modules:
            self._modules[path] = self._parse(path)
        return self._modules[path]

    def _parse(self, path: str) -> Module:
        tree = parse(self.files.get(path, ""))
        if tree is None:
            return Module(path, None)
        mod = Module(path, tree)
        for node in _top_statements(tree.body):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                kind = "class" if isinstance(node, ast.ClassDef) else "def"
                d = mod.defs[node.name] = Definition(path, node.name, kind, *_span(node))
                mod.every.append(d)
                if not isinstance(node, ast.ClassDef):
                    mod.functions[d] = node
                    continue
                for sub in node.body:
                    if isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef):
                        name = f"{node.name}.{sub.name}"
                        d = mod.defs[name] = Definition(path, name, "def", *_span(sub))
                        mod.every.append(d)
                        mod.functions[d] = sub
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    if isinstance(t, ast.Name) and t.id not in mod.defs:
                        mod.defs[t.id] = Definition(path, t.id, "assign", *_span(node))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        mod.bindings[alias.asname] = (alias.name, None)
                    else:
                        top = alias.name.split(".")[0]
                        mod.bindings[top] = (top, None)
            elif isinstance(node, ast.ImportFrom):
                base = self._from_base(path, node)
                if base is None:
                    continue
                for alias in node.names:
                    if alias.name == "*":
                        mod.stars.append(base)
                    else:
                        mod.bindings[alias.asname or alias.name] = (base, alias.name)
        return mod

    def _from_base(self, path: str, node: ast.ImportFrom) -> str | None:
        """The module an ImportFrom reads from: its dotted name, or "path:" + a relative one."""
        if not node.level:
            return node.module
        d = path.rsplit("/", 1)[0] + "/" if "/" in path else ""
        for _ in range(node.level - 1):
            if not d:
                return None
            d = d[:-1].rsplit("/", 1)[0] + "/" if "/" in d[:-1] else ""
        init = f"{d}__init__.py"
        ref: ModuleRef | None = ModuleRef(init if init in self.files else d)
        for part in (node.module or "").split(".") if node.module else []:
            ref = self.submodule(ref, part) if ref else None
        return f"path:{ref.path}" if ref else None

    @staticmethod
    def package_dir(ref: ModuleRef) -> str | None:
        if ref.path == "" or ref.path.endswith("/"):
            return ref.path
        if ref.path.endswith("/__init__.py") or ref.path == "__init__.py":
            return ref.path[: -len("__init__.py")]
        return None

    def submodule(self, ref: ModuleRef, name: str) -> ModuleRef | None:
        d = self.package_dir(ref)
        if d is None:
            return None
        for candidate in (f"{d}{name}.py", f"{d}{name}/__init__.py"):
            if candidate in self.files:
                return ModuleRef(candidate)
        return ModuleRef(f"{d}{name}/") if f"{d}{name}/" in self.dirs else None

    def find_module(self, dotted: str, importer: str) -> ModuleRef | None:
        """Where `import dotted` from the file `importer` lands, or None (not in the repo)."""
        if dotted.startswith("path:"):
            return ModuleRef(dotted[5:])
        key = (dotted, importer.rsplit("/", 1)[0] if "/" in importer else "")
        if key not in self._found:
            self._found[key] = self._find_module(dotted, importer)
        return self._found[key]

    def _find_module(self, dotted: str, importer: str) -> ModuleRef | None:
        parts = [p for p in dotted.split(".") if p]
        if not parts:
            return None
        own = importer.rsplit("/", 1)[0] + "/" if "/" in importer else ""
        roots = [own, "", "src/"]
        while own:
            own = own[:-1].rsplit("/", 1)[0] + "/" if "/" in own[:-1] else ""
            roots.append(own)
        for root in dict.fromkeys(roots):
            ref: ModuleRef | None = ModuleRef(root)
            for part in parts:
                ref = self.submodule(ref, part) if ref else None
            if ref is not None:
                return ref
        tail = "/".join(parts)
        found = sorted(
            (p for p in self.files if p.endswith((f"/{tail}.py", f"/{tail}/__init__.py"))),
            key=len,
        )
        return ModuleRef(found[0]) if found else None

    # -- names -------------------------------------------------------------------------------

    def resolve(self, path: str, name: str, depth: int = 0) -> list[Target]:
        """What `name` means at the top of module `path`: its definition (and, for an alias
        such as `parse = _parse`, the aliased one too), or the module it names."""
        if depth > MAX_DEPTH:
            return []
        ref = ModuleRef(path)
        if path.endswith("/") or path == "":
            return [sub] if (sub := self.submodule(ref, name)) else []
        mod = self.module(path)
        if name in mod.defs:
            d = mod.defs[name]
            out: list[Target] = [d]
            if d.kind == "assign" and mod.tree is not None:
                out += self._alias(mod, d, depth)
            return out
        if name in mod.bindings:
            base, attr = mod.bindings[name]
            target = self.find_module(base, path)
            if target is None:
                return []
            if attr is None:
                return [target]
            return self.member(target, attr, depth + 1)
        for star in mod.stars:
            target = self.find_module(star, path)
            if target is not None and (found := self.member(target, name, depth + 1)):
                return found
        sub = self.submodule(ref, name)
        return [sub] if sub else []

    def _alias(self, mod: Module, d: Definition, depth: int) -> list[Target]:
        for node in _top_statements(mod.tree.body if mod.tree else []):
            if isinstance(node, ast.Assign) and node.lineno == d.start:
                value = node.value
                if isinstance(value, ast.Name) and value.id != d.qualname:
                    return [t for t in self.resolve(mod.path, value.id, depth + 1) if t != d]
        return []

    def member(self, target: ModuleRef, attr: str, depth: int = 0) -> list[Target]:
        """`attr` of a module: a submodule first (`from pkg import module`), else a name."""
        if target.path.endswith(".py") and not target.path.endswith("__init__.py"):
            return self.resolve(target.path, attr, depth)
        sub = self.submodule(target, attr)
        if target.path.endswith("/"):
            return [sub] if sub else []
        found = self.resolve(target.path, attr, depth)
        if found:
            return found
        return [sub] if sub else []

    def resolve_chain(self, path: str, chain: list[str]) -> list[Target]:
        """Every definition along `a.b.c` as seen from module `path` (a class, then the
        method of it the chain names)."""
        out: list[Target] = []
        current = self.resolve(path, chain[0])
        out += current
        for attr in chain[1:]:
            nxt: list[Target] = []
            for t in current:
                if isinstance(t, ModuleRef):
                    nxt += self.member(t, attr)
                elif t.kind == "class":
                    method = self.module(t.path).defs.get(f"{t.qualname}.{attr}")
                    nxt += [method] if method else []
            if not nxt:
                break
            out += nxt
            current = nxt
        return list(dict.fromkeys(out))

    # -- lookups for the writer --------------------------------------------------------------

    def enclosing(self, path: str, line: int) -> Definition | None:
        """The innermost def (a method before its class) holding `line` of `path`."""
        best: Definition | None = None
        for d in self.module(path).defs.values():
            inside = d.kind != "assign" and d.start <= line <= d.end
            if inside and (best is None or d.end - d.start < best.end - best.start):
                best = d
        return best

    def named(self, name: str, limit: int = 8, seconds: float = 3.0) -> list[Definition]:
        """Definitions called `name` (or `Class.name`, or the dotted `pkg.mod.name`); the
        search of every module stops after `seconds` (a huge repository)."""
        deadline = time.monotonic() + seconds
        if "." in name:
            head, _, last = name.rpartition(".")
            ref = self.find_module(head, "")
            if ref is not None and (found := self.member(ref, last)):
                return [d for d in found if isinstance(d, Definition)][:limit]
        out: list[Definition] = []
        for path in sorted(self.files):
            if not path.endswith(".py") or time.monotonic() > deadline:
                continue
            for qual, d in self.module(path).defs.items():
                if qual == name or qual.endswith("." + name):
                    out.append(d)
                    if len(out) >= limit:
                        return out
        return out
