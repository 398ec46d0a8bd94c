"""The floor under a jail built per run: nsjail itself, run directly with the daemon's own
arguments (no HTTP, no daemon, no cgroup), starting `python3 -u main.py` or `/bin/true`.

    with JailFloor() as floor: floor.python(); floor.true()   # each returns seconds
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from sandboxd.backends.nsjail import NsjailBackend
from sandboxd.backends.nsjail_config import BASE_ENV, jail_config
from sandboxd.models import Limits
from sandboxd.settings import Settings
from sandboxd.workspace import Workspace


class JailFloor:
    def __init__(self) -> None:
        state = Path(tempfile.mkdtemp(prefix="sandboxd-floor-", dir="/var/tmp"))
        state.chmod(0o711)
        settings = Settings(
            state_dir=state,
            backend={"cgroup_parent": "sandboxd-floor", "pool": {"enabled": False}},
        )
        self.backend = NsjailBackend(settings)
        asyncio.run(self.backend.start())
        uid = self.backend.config.uid_base + settings.max_concurrent_runs - 1
        self.ws = Workspace(self.backend.runs_dir / "floor", uid=uid, gid=uid)
        self.ws.create(disk_mib=Limits().disk_mib)
        self.ws.write_file("main.py", b'print("hello")\n')
        self.args = self.backend.run_args(self.ws, uid, Limits(), egress=False)

    def _time(self, argv: list[str], expect: str) -> float:
        config = self.ws.root / "floor.cfg"
        config.write_bytes(jail_config("floor", argv, BASE_ENV))
        cmd = [str(self.backend.binary), "--config", str(config), *self.args]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        elapsed = time.perf_counter() - t0
        if done.stdout != expect:
            raise RuntimeError(f"nsjail floor run printed {done.stdout!r}: {done.stderr[-500:]}")
        return elapsed

    def python(self) -> float:
        return self._time([self.backend.config.python, "-u", "main.py"], "hello\n")

    def true(self) -> float:
        return self._time(["/bin/true"], "")

    def close(self) -> None:
        self.ws.destroy()
        asyncio.run(self.backend.close())

    def __enter__(self) -> JailFloor:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
