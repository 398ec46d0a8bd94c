"""The pinned projects and injected bugs of `bench/realrepos.py`, and the mechanics that need no
daemon: fetching an sdist once into a cache, unpacking it, injecting one bug, and checking a
tree's suite in a plain virtual environment on the host.

Why pinned and written out: the figures must mean the same thing on every run, so each bug is
one exact, small edit (a flipped comparison, an off-by-one, a wrong constant) inside a named
function, and it is refused unless it occurs exactly once in that function. The sdists come
through the host's own pip (its configuration names the index; nothing here names one).

Left out after the host check (the suite passes with the bug, so no test could show it):
toolz `get_in` with `if no_default:` negated, idna `intranges_contain` with `left <= int_`
made `left < int_`, boltons `ordinalize` with `numstr[-2] == '1'` made `'2'`, python-dateutil
`relativedelta._fix` with `> 59` made `> 60` (and `> 11` months made `> 12`), wcwidth
`_scan_zwj_cluster_end` with `0x200D` made `0x200C` and `wcwidth` with its C1 range
`< 0x0A0` made `< 0x09F` (in the test files it runs); and croniter
`_is_leap` with `year % 100 != 0` flipped, whose suite then runs past the host check's limit.

Where a suite is narrowed to some of its files, the whole one is slow on a loaded 2-core
machine (python-dateutil's takes 90 s, and 3 of its tests fail with the host's time zone
files), and wcwidth runs in its Python mode (its tox `-python` environments): its tests
assert the C extension is loaded otherwise, and a sandbox has no C compiler to build it."""

from __future__ import annotations

import ast
import itertools
import re
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

#: Persistent across runs (so reruns do not refetch), hence a fixed path and not mkdtemp.
CACHE = Path("/var/tmp/coder-realrepos")  # noqa: S108
DOWNLOAD_TIMEOUT_S = 300
VENV_TIMEOUT_S = 600
SUITE_TIMEOUT_S = 300


@dataclass(frozen=True)
class Task:
    """One bug: in `path`, inside the function `qualname`, `old` becomes `new`."""

    name: str
    path: str
    qualname: str
    old: str
    new: str


@dataclass(frozen=True)
class Project:
    name: str
    version: str
    #: The test command, as coder runs it in the sandbox and the host check runs it
    #: (`NAME=value` settings first, then pytest and its arguments).
    test: str
    #: What a developer installs into a plain venv to run the suite (besides the project).
    test_deps: tuple[str, ...] = ("pytest",)
    #: Where the package lives inside the tree (`src` for a src layout).
    src: str = "."
    tasks: tuple[Task, ...] = field(default_factory=tuple)
    #: Files its build writes (setuptools-scm / hatch-vcs version files), which the sdist
    #: carries but a checkout of its repository does not (they are gitignored): removed from
    #: the tree coder gets, so its setup has to make them (the host check keeps them).
    generated: tuple[str, ...] = ()

    @property
    def spec(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}"


PROJECTS: tuple[Project, ...] = (
    Project(
        "toolz",
        "1.1.0",
        "pytest -q -p no:cacheprovider toolz/tests",
        tasks=(
            Task("take_nth", "toolz/itertoolz.py", "take_nth", "seq, 0, None", "seq, 1, None"),
            Task("nth", "toolz/itertoolz.py", "nth", "return seq[n]", "return seq[n - 1]"),
            Task("frequencies", "toolz/itertoolz.py", "frequencies", "+= 1", "+= 2"),
            Task(
                "diff",
                "toolz/itertoolz.py",
                "diff",
                "if items.count(items[0]) != N:",
                "if items.count(items[0]) == N:",
            ),
        ),
    ),
    Project(
        "more-itertools",
        "10.8.0",
        "pytest -q -p no:cacheprovider tests",
        tasks=(
            Task(
                "nth_or_last",
                "more_itertools/more.py",
                "nth_or_last",
                "islice(iterable, n + 1)",
                "islice(iterable, n)",
            ),
            Task(
                "windowed",
                "more_itertools/more.py",
                "windowed",
                "if len(window) < n:",
                "if len(window) <= n:",
            ),
            Task(
                "mark_ends",
                "more_itertools/more.py",
                "mark_ends",
                "yield first, True, a",
                "yield first, False, a",
            ),
        ),
    ),
    Project(
        "cachetools",
        "7.2.0",
        "pytest -q -p no:cacheprovider tests",
        src="src",
        tasks=(
            Task(
                "cache_setitem",
                "src/cachetools/__init__.py",
                "Cache.__setitem__",
                "if size > maxsize:",
                "if size >= maxsize:",
            ),
            Task(
                "ttl_expire",
                "src/cachetools/__init__.py",
                "TTLCache.expire",
                "not (time < curr.expires)",
                "not (time <= curr.expires)",
            ),
        ),
    ),
    Project(
        "idna",
        "3.20",
        "pytest -q -p no:cacheprovider tests",
        test_deps=("pytest", "hypothesis"),
        tasks=(
            Task(
                "label_length",
                "idna/core.py",
                "valid_label_length",
                "len(label) <= 63",
                "len(label) < 63",
            ),
            Task(
                "hyphen_ok",
                "idna/core.py",
                "check_hyphen_ok",
                'label[2:4] == "--"',
                'label[1:3] == "--"',
            ),
            Task(
                "intranges_from_list",
                "idna/intranges.py",
                "intranges_from_list",
                "current_range[-1] + 1)",
                "current_range[-1])",
            ),
        ),
    ),
    Project(
        "attrs",
        "26.1.0",
        "pytest -q -p no:cacheprovider tests/test_validators.py",
        test_deps=("pytest", "hypothesis"),
        src="src",
        tasks=(
            Task(
                "max_len",
                "src/attr/validators.py",
                "_MaxLengthValidator.__call__",
                "if len(value) > self.max_length:",
                "if len(value) >= self.max_length:",
            ),
            Task(
                "min_len",
                "src/attr/validators.py",
                "_MinLengthValidator.__call__",
                "if len(value) < self.min_length:",
                "if len(value) <= self.min_length:",
            ),
        ),
    ),
    Project(
        "freezegun",
        "1.5.5",
        "pytest -q -p no:cacheprovider tests",
        test_deps=("pytest", "python-dateutil"),
        tasks=(
            Task(
                "step_tick",
                "freezegun/api.py",
                "StepTickTimeFactory.tick",
                "seconds=self.step_width)",
                "seconds=self.step_width + 1)",
            ),
            Task(
                "monotonic_ns",
                "freezegun/api.py",
                "_get_fake_monotonic_ns",
                "* 1000000 +",
                "* 100000 +",
            ),
        ),
    ),
    Project(
        "croniter",
        "7.0.0",
        "pytest -q -p no:cacheprovider src/croniter/tests",
        test_deps=("pytest", "python-dateutil", "pytz"),
        src="src",
        tasks=(
            Task(
                "nearest_weekday",
                "src/croniter/croniter.py",
                "croniter._get_nearest_weekday",
                "if weekday < 5:",
                "if weekday < 4:",
            ),
            Task(
                "nth_weekday",
                "src/croniter/croniter.py",
                "croniter._get_nth_weekday_of_month",
                "if c[0][0] == 0:",
                "if c[0][0] != 0:",
            ),
        ),
    ),
    Project(
        "humanize",
        "4.17.0",
        "pytest -q -p no:cacheprovider",
        test_deps=("pytest", "freezegun", "pytest-benchmark"),
        src="src",
        generated=("src/humanize/_version.py",),
        tasks=(
            Task(
                "ordinal",
                "src/humanize/number.py",
                "ordinal",
                "value % 100 in (11, 12, 13)",
                "value % 100 in (11, 12)",
            ),
            Task(
                "apnumber",
                "src/humanize/number.py",
                "apnumber",
                "0 <= value < 10",
                "0 <= value < 9",
            ),
        ),
    ),
    Project(
        "wcwidth",
        "0.9.5",
        # its Python mode (tox's `-python` envs): a sandbox has no C compiler for the extension
        "WCWIDTH_PYTHON=1 pytest -q -p no:cacheprovider tests/test_core.py tests/test_emojis.py",
        test_deps=("pytest", "pytest-cov"),
        tasks=(
            Task(
                "bisearch",
                "wcwidth/bisearch.py",
                "bisearch",
                "if ucs > table[mid][1]:",
                "if ucs >= table[mid][1]:",
            ),
            Task(
                "vs16",
                "wcwidth/_wcswidth.py",
                "wcswidth",
                "if ucs == 0xFE0F and last_measured_idx >= 0:",
                "if ucs == 0xFE0F and last_measured_idx > 0:",
            ),
        ),
    ),
    Project(
        "python-dateutil",
        "4.0.0",
        "pytest -q -p no:cacheprovider tests/test_relativedelta.py tests/test_easter.py",
        test_deps=("pytest", "pytest-cov", "hypothesis", "freezegun", "attrs", "tzdata"),
        src="src",
        generated=("src/dateutil/_version.py",),
        tasks=(
            Task(
                "relativedelta_seconds",
                "src/dateutil/relativedelta.py",
                "relativedelta._fix",
                "divmod(self.seconds * s, 60)",
                "divmod(self.seconds * s, 61)",
            ),
            Task(
                "relativedelta_months",
                "src/dateutil/relativedelta.py",
                "relativedelta._fix",
                "divmod(self.months * s, 12)",
                "divmod(self.months * s, 13)",
            ),
        ),
    ),
    Project(
        "boltons",
        "26.2.0",
        "pytest -q -p no:cacheprovider --doctest-modules boltons tests",
        tasks=(
            Task(
                "pairwise",
                "boltons/iterutils.py",
                "pairwise_iter",
                "windowed_iter(src, 2, fill=end)",
                "windowed_iter(src, 3, fill=end)",
            ),
            Task(
                "cardinalize",
                "boltons/strutils.py",
                "cardinalize",
                "if count == 1:",
                "if count == 0:",
            ),
        ),
    ),
)


class FetchFailed(RuntimeError):
    """An sdist could not be fetched: the host's pip could not reach its index."""


def fetch(project: Project, cache: Path = CACHE) -> Path:
    """The project's sdist, downloaded once into `cache/sdists` by the host's own pip."""
    sdists = cache / "sdists"
    sdists.mkdir(parents=True, exist_ok=True)
    found = _cached(project, sdists)
    if found is not None:
        return found
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    cmd += ["--timeout", "30", "--retries", "2", "-d", str(sdists), project.spec]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise FetchFailed(f"pip download {project.spec} took over {DOWNLOAD_TIMEOUT_S}s") from None
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise FetchFailed(
            f"pip download {project.spec} failed (exit {proc.returncode}); is the index in "
            f"`pip config list` reachable? {' | '.join(last)}"
        )
    found = _cached(project, sdists)
    if found is None:
        raise FetchFailed(f"pip download {project.spec} saved no sdist in {sdists}")
    return found


def _cached(project: Project, sdists: Path) -> Path | None:
    want = f"{project.name}_{project.version}.tar.gz".replace("-", "_").lower()
    for path in sorted(sdists.glob("*.tar.gz")):
        if path.name.lower().replace("-", "_") == want:
            return path
    return None


def unpack(sdist: Path, dest: Path) -> Path:
    """The sdist's tree, unpacked under `dest` (its one top directory)."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdist) as tar:
        tar.extractall(dest, filter="data")
    (top,) = [p for p in dest.iterdir() if p.is_dir()]
    return top


def _function_span(text: str, qualname: str) -> tuple[int, int]:
    """The line span (0-based, end exclusive) of the function `qualname` ("Class.method")."""
    tree = ast.parse(text)
    parts = qualname.split(".")

    def find(body: list[ast.stmt], names: list[str]) -> ast.AST | None:
        for node in body:
            kinds = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
            if isinstance(node, kinds) and node.name == names[0]:
                return node if len(names) == 1 else find(node.body, names[1:])
        return None

    node = find(tree.body, parts)
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or node.end_lineno is None:
        raise ValueError(f"no function {qualname}")
    return node.lineno - 1, node.end_lineno


@dataclass(frozen=True)
class Injected:
    """The bug as it lies in the file: the whole lines before and after the mutation."""

    buggy_lines: str
    fixed_lines: str


def inject(tree: Path, task: Task) -> Injected:
    """Apply `task` to `tree`; refuse unless `old` occurs exactly once in the function."""
    target = tree / task.path
    text = target.read_text()
    lines = text.split("\n")
    start, end = _function_span(text, task.qualname)
    body = "\n".join(lines[start:end])
    if body.count(task.old) != 1:
        raise ValueError(f"{task.name}: {task.old!r} occurs {body.count(task.old)}x")
    offset = body.index(task.old)
    first = start + body[:offset].count("\n")
    last = first + task.old.count("\n") + 1
    fixed = "\n".join(lines[first:last])
    buggy = fixed.replace(task.old, task.new, 1)
    lines[first:last] = buggy.split("\n")
    target.write_text("\n".join(lines))
    return Injected(buggy, fixed)


def host_venv(project: Project, cache: Path = CACHE) -> Path:
    """A plain venv on the host with the project's test deps, made once (host pip config)
    and again when they change."""
    venv = cache / "venvs" / project.key
    python = venv / "bin" / "python"
    ready = venv / ".ready"
    if ready.exists() and ready.read_text() == " ".join(project.test_deps):
        return python
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=VENV_TIMEOUT_S)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *project.test_deps],
        check=True,
        timeout=VENV_TIMEOUT_S,
        capture_output=True,
    )
    ready.write_text(" ".join(project.test_deps))
    return python


def host_suite(project: Project, tree: Path, python: Path) -> bool:
    """Whether the suite passes on `tree` in the host venv (the tree first on the path)."""
    words = project.test.split()
    settings = list(itertools.takewhile(re.compile(r"^[A-Z_][A-Z0-9_]*=").match, words))
    program, *args = words[len(settings) :]
    assert program == "pytest"
    env = {"PATH": f"{python.parent}:/usr/bin:/bin", "PYTHONPATH": str(tree / project.src)}
    env["HOME"] = str(tree)
    env.update(w.split("=", 1) for w in settings)
    proc = subprocess.run(
        [str(python), "-m", "pytest", *args],
        cwd=tree,
        env=env,
        capture_output=True,
        timeout=SUITE_TIMEOUT_S,
    )
    return proc.returncode == 0
