"""The floor under a jail built per run: nsjail itself, run directly with the daemon's own
arguments (no HTTP, no daemon, no cgroup), starting `python3 -u main.py` or `/bin/true`; and
the same with nsjail already started (loaded, linked, waiting for its config on a pipe), the
least a jail built per run could cost with nsjail.

    with JailFloor() as floor: floor.python(); floor.true(); floor.python_prestarted()
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from sandboxd.backends.host.jail_init import BASE_ENV
from sandboxd.backends.host.workspace import Workspace
from sandboxd.backends.nsjail.backend import NsjailBackend
from sandboxd.backends.nsjail.config import jail_config
from sandboxd.http.app import claim_state
from sandboxd.models import Limits
from sandboxd.settings import Settings


class JailFloor:
    def __init__(self) -> None:
        state = Path(tempfile.mkdtemp(prefix="sandboxd-floor-", dir="/var/tmp"))
        state.chmod(0o711)
        settings = Settings(
            state_dir=state,
            cgroup_parent="sandboxd-floor",
            backends={"nsjail": {"pool": {"enabled": False}, "fork_server": False}},
        )
        self.claim = claim_state(settings)
        settings = settings.with_identity(self.claim.identity)
        self.backend = NsjailBackend(settings, settings.backend_config("nsjail"))
        asyncio.run(self.backend.start())
        uid = settings.identity.uid_base + settings.max_concurrent_runs - 1
        self.ws = Workspace(self.backend.runs_dir / "floor", uid=uid, gid=uid)
        self.ws.create(disk_mib=Limits().disk_mib)
        self.ws.write_file("main.py", b'print("hello")\n')
        self.args = self.backend.jailer.run_args(self.ws, uid, Limits(), egress=False)

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

    def python_prestarted(self, settle_s: float = 0.05) -> float:
        """From handing the config to a waiting nsjail to its exit."""
        config = jail_config("floor", [self.backend.config.python, "-u", "main.py"], BASE_ENV)
        cfg_r, cfg_w = os.pipe()
        try:
            proc = subprocess.Popen(
                [str(self.backend.binary), "--config", f"/dev/fd/{cfg_r}", *self.args],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(cfg_r,),
            )
        finally:
            os.close(cfg_r)
        time.sleep(settle_s)  # loaded and blocked on the pipe
        t0 = time.perf_counter()
        with os.fdopen(cfg_w, "wb") as fh:
            fh.write(config)
        out, err = proc.communicate()
        elapsed = time.perf_counter() - t0
        if out != b"hello\n":
            raise RuntimeError(f"prestarted nsjail printed {out!r}: {err[-500:]!r}")
        return elapsed

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
