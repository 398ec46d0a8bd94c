"""Per-run cgroups, owned by the daemon: limits, accounting, kill-all and crash recovery.

Supports cgroup v1 (one hierarchy per controller, as on hybrid hosts) and cgroup v2 (unified).
The daemon creates `<parent>/<run id>` itself and puts the nsjail supervisor in it *before* the
jail starts, so every process of the run is inside, whatever it forks. `<parent>` is the
daemon's own (`<cgroup_parent>/<daemon id>`): it reaps nothing outside it.

A kill freezes the cgroup first (v1 freezer, v2 `cgroup.freeze`), signals every process, then
thaws it: no process of the run can act on another's death (a shell printing after its
`sleep` was killed, a `finally` running after its child died) once the kill has begun.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
from abc import ABC, abstractmethod
from collections.abc import Set
from pathlib import Path

from sandboxd.errors import BackendUnavailable

CGROUP_ROOT = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("memory", "pids", "cpuacct")
#: Used when the host mounts it (it makes kills atomic), not required.
V1_OPTIONAL = ("freezer",)
POLL_S = 0.005
FREEZE_WAIT_S = 1.0
FREEZE_POLL_S = 0.001


def _read(path: Path) -> str:
    with open(path, encoding="ascii") as fh:
        return fh.read()


def _write(path: Path, value: str) -> None:
    with open(path, "w", encoding="ascii") as fh:
        fh.write(value)


def _keyed(text: str) -> dict[str, int]:
    """Parse 'key value' lines (memory.events, cpu.stat, oom_control, pids.events)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = int(value)
    return out


def _procs(dirs: list[Path]) -> set[int]:
    pids: set[int] = set()
    for d in dirs:
        with contextlib.suppress(FileNotFoundError):
            pids.update(int(p) for p in _read(d / "cgroup.procs").split())
    return pids


class RunCgroup(ABC):
    """The cgroup(s) of one run."""

    def __init__(self, dirs: list[Path]) -> None:
        self.dirs = dirs
        self._cpu0 = 0.0
        self._oom0 = 0
        self._refused0 = 0

    def add_pid(self, pid: int) -> None:
        for d in self.dirs:
            _write(d / "cgroup.procs", str(pid))

    def pids(self) -> set[int]:
        return _procs(self.dirs)

    def cpu_time_s(self) -> float:
        """Cpu time of the run since `start_accounting` (or since the cgroup was made)."""
        return self._cpu_total() - self._cpu0

    def oom_kills(self) -> int:
        return self._oom_total() - self._oom0

    def pids_refused(self) -> int:
        """How many forks the pids limit refused."""
        return self._refused_total() - self._refused0

    def start_accounting(self) -> None:
        """Count from now: a warm sandbox's preparation is not its run's usage."""
        self._cpu0 = self._cpu_total()
        self._oom0 = self._oom_total()
        self._refused0 = self._refused_total()
        self._reset_peak()

    @abstractmethod
    def set_limits(self, *, memory_bytes: int, pids_max: int) -> None:
        """Change the memory and pids limits (OSError if usage is already over them)."""

    @abstractmethod
    def _cpu_total(self) -> float: ...

    @abstractmethod
    def peak_memory_bytes(self) -> int: ...

    @abstractmethod
    def _reset_peak(self) -> None: ...

    @abstractmethod
    def _oom_total(self) -> int: ...

    @abstractmethod
    def _refused_total(self) -> int: ...

    async def kill_all(self, deadline_s: float = 5.0, *, spare: Set[int] = frozenset()) -> bool:
        """SIGKILL every process in the cgroup but `spare` until none is left; True then.

        The first pass happens frozen, so that none of them runs between two kills. Sparing
        the supervisor (nsjail) at first lets it reap its jail, instead of leaving zombies to
        the host's init; `terminate` then takes the supervisor too.
        """
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        frozen = await self._freeze(min(FREEZE_WAIT_S, deadline_s))
        try:
            self._kill(self.pids() - spare)
        finally:
            if frozen:
                self._thaw()
        while True:
            pids = self.pids() - spare
            if not pids:
                return True
            self._kill(pids)
            if loop.time() > end:
                return False
            await asyncio.sleep(POLL_S)

    @staticmethod
    def _kill(pids: Set[int]) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    async def _freeze(self, wait_s: float) -> bool:
        """Freeze the cgroup and wait (up to `wait_s`) until it is; False where it cannot
        freeze (then the kill goes on unfrozen, as fast as it can)."""
        try:
            if not self._start_freeze():
                return False
        except OSError:
            return False
        for _ in range(int(wait_s / FREEZE_POLL_S)):  # v1 has no event to wait on
            if self._is_frozen():
                break
            await asyncio.sleep(FREEZE_POLL_S)
        return True

    @abstractmethod
    def _start_freeze(self) -> bool:
        """Ask the kernel to freeze the cgroup; False if it has no freezer."""

    @abstractmethod
    def _is_frozen(self) -> bool: ...

    @abstractmethod
    def _thaw(self) -> None: ...

    async def terminate(self, supervisors: Set[int], grace_s: float = 2.0) -> bool:
        """Kill the jail, give its supervisors `grace_s` to reap it and exit, then kill all."""
        await self.kill_all(spare=supervisors)
        for _ in range(int(grace_s / POLL_S)):  # cgroup v1 has no event to wait on
            if not self.pids() & supervisors:
                break
            await asyncio.sleep(POLL_S)
        return await self.kill_all()

    def root_pids(self) -> set[int]:
        """Processes of the cgroup that run as host root: the supervisors, never the jail."""
        found = set()
        for pid in self.pids():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                if os.stat(f"/proc/{pid}").st_uid == 0:
                    found.add(pid)
        return found

    def rename(self, name: str) -> None:
        """Rename the cgroup: cgroup v1 can; v2 refuses (OSError)."""
        raise OSError(errno.EPERM, "cgroup v2 directories cannot be renamed")

    def remove(self) -> None:
        for d in self.dirs:
            with contextlib.suppress(FileNotFoundError):
                d.rmdir()


def _v1_memory_limit(memory: Path, limit: int) -> None:
    """Set memory and memory+swap to `limit`; memsw may never be below memory, so the order
    depends on the direction of the change."""
    memsw = memory / "memory.memsw.limit_in_bytes"
    if not memsw.exists():  # only with swap accounting
        _write(memory / "memory.limit_in_bytes", str(limit))
        return
    if limit < int(_read(memory / "memory.limit_in_bytes")):
        _write(memory / "memory.limit_in_bytes", str(limit))
        _write(memsw, str(limit))
    else:
        _write(memsw, str(limit))
        _write(memory / "memory.limit_in_bytes", str(limit))


class _V1Run(RunCgroup):
    def __init__(self, mounts: dict[str, Path], name: str) -> None:
        self.by = {c: m / name for c, m in mounts.items()}
        super().__init__(sorted(set(self.by.values())))

    def _start_freeze(self) -> bool:
        freezer = self.by.get("freezer")
        if freezer is None:
            return False
        _write(freezer / "freezer.state", "FROZEN")
        return True

    def _is_frozen(self) -> bool:
        try:
            return _read(self.by["freezer"] / "freezer.state").strip() == "FROZEN"
        except OSError:
            return True  # gone: nothing left to freeze

    def _thaw(self) -> None:
        with contextlib.suppress(OSError):
            _write(self.by["freezer"] / "freezer.state", "THAWED")

    def rename(self, name: str) -> None:
        done: list[Path] = []
        try:
            for d in self.dirs:
                os.rename(d, d.with_name(name))
                done.append(d)
        except OSError:
            for d in done:  # all or nothing
                os.rename(d.with_name(name), d)
            raise
        self.by = {c: d.with_name(name) for c, d in self.by.items()}
        self.dirs = sorted(set(self.by.values()))

    def set_limits(self, *, memory_bytes: int, pids_max: int) -> None:
        _v1_memory_limit(self.by["memory"], memory_bytes)
        _write(self.by["pids"] / "pids.max", str(pids_max))

    def _cpu_total(self) -> float:
        return int(_read(self.by["cpuacct"] / "cpuacct.usage")) / 1e9

    def peak_memory_bytes(self) -> int:
        return int(_read(self.by["memory"] / "memory.max_usage_in_bytes"))

    def _reset_peak(self) -> None:
        _write(self.by["memory"] / "memory.max_usage_in_bytes", "0")

    def _oom_total(self) -> int:
        return _keyed(_read(self.by["memory"] / "memory.oom_control")).get("oom_kill", 0)

    def _refused_total(self) -> int:
        try:
            return _keyed(_read(self.by["pids"] / "pids.events")).get("max", 0)
        except FileNotFoundError:
            return 0


class _V2Run(RunCgroup):
    def __init__(self, path: Path) -> None:
        super().__init__([path])
        self.path = path

    def set_limits(self, *, memory_bytes: int, pids_max: int) -> None:
        _write(self.path / "memory.max", str(memory_bytes))
        _write(self.path / "pids.max", str(pids_max))

    def _cpu_total(self) -> float:
        return _keyed(_read(self.path / "cpu.stat")).get("usage_usec", 0) / 1e6

    def peak_memory_bytes(self) -> int:
        try:
            return int(_read(self.path / "memory.peak"))
        except FileNotFoundError:  # kernels before 5.19
            return int(_read(self.path / "memory.current"))

    def _reset_peak(self) -> None:
        with contextlib.suppress(OSError):  # resettable since Linux 6.12
            _write(self.path / "memory.peak", "reset")

    def _oom_total(self) -> int:
        return _keyed(_read(self.path / "memory.events")).get("oom_kill", 0)

    def _refused_total(self) -> int:
        return _keyed(_read(self.path / "pids.events")).get("max", 0)

    def _start_freeze(self) -> bool:
        if not (self.path / "cgroup.freeze").exists():
            return False
        _write(self.path / "cgroup.freeze", "1")
        return True

    def _is_frozen(self) -> bool:
        try:
            return _keyed(_read(self.path / "cgroup.events")).get("frozen") == 1
        except OSError:
            return True

    def _thaw(self) -> None:
        with contextlib.suppress(OSError):
            _write(self.path / "cgroup.freeze", "0")

    async def kill_all(self, deadline_s: float = 5.0, *, spare: Set[int] = frozenset()) -> bool:
        if not spare:  # one atomic kill of everything, where the kernel has it
            with contextlib.suppress(FileNotFoundError):
                _write(self.path / "cgroup.kill", "1")
        return await super().kill_all(deadline_s, spare=spare)


class CgroupManager(ABC):
    """Creates run cgroups under a parent that the daemon owns."""

    version: int

    def __init__(self, parent: str) -> None:
        self.parent = parent

    @abstractmethod
    def setup(self) -> None:
        """Create the parent cgroups; raise BackendUnavailable when the host cannot."""

    @abstractmethod
    def parent_dirs(self) -> list[Path]: ...

    @abstractmethod
    def create(self, name: str, *, memory_bytes: int, pids_max: int) -> RunCgroup: ...

    @abstractmethod
    def open(self, name: str) -> RunCgroup: ...

    def leftovers(self) -> list[str]:
        """Names of run cgroups left by an earlier daemon (crash recovery)."""
        names: set[str] = set()
        for d in self.parent_dirs():
            with contextlib.suppress(FileNotFoundError):
                names.update(p.name for p in d.iterdir() if p.is_dir())
        return sorted(names)

    def remove_parent(self) -> None:
        """Remove the daemon's own (empty) cgroup at its end; the shared root stays."""
        for d in self.parent_dirs():
            with contextlib.suppress(OSError):
                d.rmdir()


class CgroupV1(CgroupManager):
    version = 1

    def __init__(self, parent: str, mounts: dict[str, Path]) -> None:
        super().__init__(parent)
        self.mounts = {c: m / parent for c, m in mounts.items()}

    def parent_dirs(self) -> list[Path]:
        return sorted(set(self.mounts.values()))

    def setup(self) -> None:
        for d in self.parent_dirs():
            try:
                d.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise BackendUnavailable(f"cannot create cgroup {d}: {exc.strerror}") from exc

    def create(self, name: str, *, memory_bytes: int, pids_max: int) -> RunCgroup:
        run = _V1Run(self.mounts, name)
        for d in run.dirs:
            d.mkdir()
        run.set_limits(memory_bytes=memory_bytes, pids_max=pids_max)
        return run

    def open(self, name: str) -> RunCgroup:
        return _V1Run(self.mounts, name)


class CgroupV2(CgroupManager):
    version = 2

    def __init__(self, parent: str, root: Path = CGROUP_ROOT) -> None:
        super().__init__(parent)
        self.root = root
        self.path = root / parent

    def parent_dirs(self) -> list[Path]:
        return [self.path]

    def setup(self) -> None:
        wanted = {"memory", "pids", "cpu"}
        available = set(_read(self.root / "cgroup.controllers").split())
        if not wanted <= available:
            raise BackendUnavailable(
                f"cgroup v2 at {self.root} lacks controllers {sorted(wanted - available)}"
            )
        try:
            enable = " ".join(f"+{c}" for c in sorted(wanted))
            _write(self.root / "cgroup.subtree_control", enable)
            level = self.root
            for part in Path(self.parent).parts:  # the shared root, then the daemon's own
                level = level / part
                level.mkdir(exist_ok=True)
                _write(level / "cgroup.subtree_control", enable)
        except OSError as exc:
            hint = " (is the daemon's cgroup delegated to it?)" if exc.errno == errno.EBUSY else ""
            raise BackendUnavailable(f"cannot set up cgroup {self.path}: {exc}{hint}") from exc

    def create(self, name: str, *, memory_bytes: int, pids_max: int) -> RunCgroup:
        run = _V2Run(self.path / name)
        run.path.mkdir()
        with contextlib.suppress(FileNotFoundError):
            _write(run.path / "memory.swap.max", "0")
        run.set_limits(memory_bytes=memory_bytes, pids_max=pids_max)
        return run

    def open(self, name: str) -> RunCgroup:
        return _V2Run(self.path / name)


def _v1_mounts() -> dict[str, Path]:
    found: dict[str, Path] = {}
    with open("/proc/self/mounts", encoding="utf-8") as fh:
        for line in fh:
            _src, target, fstype, opts, *_ = line.split()
            if fstype != "cgroup":
                continue
            for controller in opts.split(","):
                if controller in V1_CONTROLLERS + V1_OPTIONAL:
                    found.setdefault(controller, Path(target))
    return found


def detect(parent: str) -> CgroupManager:
    """cgroup v2 when the host is unified, else v1; BackendUnavailable when neither works."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return CgroupV2(parent)
    mounts = _v1_mounts()
    missing = [c for c in V1_CONTROLLERS if c not in mounts]
    if missing:
        raise BackendUnavailable(
            f"cgroup v1 controllers {missing} are not mounted and cgroup v2 is not in use; "
            "memory, pids and cpu limits cannot be enforced, so no run is allowed"
        )
    return CgroupV1(parent, mounts)


def of_process(pid: int) -> RunCgroup | None:
    """The cgroup(s) a running process is in (e.g. a container's init), or None if gone."""
    try:
        text = _read(Path(f"/proc/{pid}/cgroup"))
    except (FileNotFoundError, ProcessLookupError):
        return None
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        path = next((ln.split(":", 2)[2] for ln in text.splitlines() if ln.startswith("0::")), "")
        return _V2Run(CGROUP_ROOT / path.lstrip("/"))
    mounts = _v1_mounts()
    relative: dict[str, str] = {}
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(","):
            relative[c] = path.lstrip("/")
    if any(c not in relative or c not in mounts for c in V1_CONTROLLERS):
        return None
    present = [c for c in V1_CONTROLLERS + V1_OPTIONAL if c in relative and c in mounts]
    run = _V1Run({c: mounts[c] for c in present}, "")
    run.by = {c: mounts[c] / relative[c] for c in present}
    run.dirs = sorted(set(run.by.values()))
    return run
