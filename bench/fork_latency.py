"""Forking a sandbox that holds an installed environment: the latency of `POST /v1/sandboxes`
with `from_snapshot`, against creating a fresh sandbox in the same run, and the disk a fork
uses (its image's allocated bytes) before and after a small write.

The target (issue 16): with a ~300 MB environment of a few thousand files, a fork takes
<= 200 ms p50 and uses no disk beyond what it writes, because it copies nothing: a fork is a
fresh sparse image for its overlay's upper layer over the snapshot's read-only image.

python -m bench.fork_latency [--forks N] [--env-mib M]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from sandboxd.testing import Daemon

FILES = 3000
#: Writes the environment: FILES files of random bytes (incompressible, never holes).
WRITE_ENV = """
import os, sys
total, files = int(sys.argv[1]), int(sys.argv[2])
size = total // files
for i in range(files):
    d = f"env/lib/pkg{i // 100}"
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/mod{i}.py", "wb") as fh:
        fh.write(os.urandom(size))
print(files)
"""
LIMITS = {"disk_mib": 1024, "wall_time_s": 120, "cpu_time_s": 120, "file_size_mib": 64}


def _allocated(path: Path) -> int:
    os.sync()  # what the fork's filesystem holds reaches its image first
    return os.stat(path).st_blocks * 512


def _snapshot(daemon: Daemon, sandbox_id: str) -> dict[str, Any]:
    req = daemon.request(f"/v1/sandboxes/{sandbox_id}/snapshots", data=b"{}", method="POST")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=300) as resp:
        snap: dict[str, Any] = json.loads(resp.read())
    return snap


def _delete_snapshot(daemon: Daemon, snapshot_id: str) -> None:
    req = daemon.request(f"/v1/snapshots/{snapshot_id}", method="DELETE")
    with urllib.request.urlopen(req, timeout=60):
        pass


def measure(forks: int = 20, env_mib: int = 300, files: int = FILES) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="sandboxd-bench-", dir="/var/tmp"))
    work.chmod(0o711)
    daemon = Daemon(work, "fork-bench").start()
    boxes = daemon.state_dir / "sandboxes"
    data: dict[str, Any] = {"fork": [], "fresh": [], "forks": forks, "files": files}
    try:
        with daemon.client() as c:
            source = c.create_sandbox(limits=LIMITS).id
            c.put_file(source, "write_env.py", WRITE_ENV.encode())
            made = c.run_in_sandbox(
                source,
                command=["python3", "write_env.py", str(env_mib * 1_000_000), str(files)],
            )
            if made.status != "ok" or made.stdout.strip() != str(files):
                raise RuntimeError(f"the environment was not written: {made.stderr[-500:]}")
            data["source_bytes"] = _allocated(boxes / source / "disk.img")
            t0 = time.perf_counter()
            snap = _snapshot(daemon, source)
            data["snapshot_s"] = time.perf_counter() - t0
            data["snapshot_bytes"] = snap["size_bytes"]
            for i in range(forks + 1):  # the first of each is a warm-up
                t0 = time.perf_counter()
                fork = c.create_sandbox(from_snapshot=snap["id"], limits=LIMITS).id
                fork_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                fresh = c.create_sandbox(limits=LIMITS).id
                fresh_s = time.perf_counter() - t0
                if i == 0:
                    seen = c.run_in_sandbox(fork, command=["sh", "-c", "find env -type f | wc -l"])
                    if seen.stdout.strip() != str(files):
                        raise RuntimeError(f"a fork sees {seen.stdout!r} files, not {files}")
                else:
                    data["fork"].append(fork_s)
                    data["fresh"].append(fresh_s)
                if i == forks:
                    data["fork_bytes"] = _allocated(boxes / fork / "disk.img")
                    data["fresh_bytes"] = _allocated(boxes / fresh / "disk.img")
                    c.put_file(fork, "env/lib/pkg0/mod0.py", b"# patched\n" * 400)  # 4 KB
                    data["fork_bytes_after"] = _allocated(boxes / fork / "disk.img")
                c.delete_sandbox(fork)
                c.delete_sandbox(fresh)
            c.delete_sandbox(source)
            _delete_snapshot(daemon, snap["id"])
    finally:
        daemon.stop()
        shutil.rmtree(work, ignore_errors=True)
    return data


def _p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[int(q * (len(ordered) - 1))]


def report(data: dict[str, Any]) -> str:
    mib = 1024 * 1024
    rows = ["| what | p50 ms | p90 ms |", "|---|---|---|"]
    for key, label in (
        ("fork", "`POST /v1/sandboxes` with `from_snapshot` (a fork)"),
        ("fresh", "`POST /v1/sandboxes`, a fresh empty sandbox (baseline)"),
    ):
        p50 = statistics.median(data[key]) * 1e3
        rows.append(f"| {label} | {p50:.0f} | {_p(data[key], 0.9) * 1e3:.0f} |")
    grew = data["fork_bytes_after"] - data["fork_bytes"]
    disk = [
        "| disk | MiB |",
        "|---|---|",
        f"| source sandbox image, with the environment | {data['source_bytes'] / mib:.1f} |",
        f"| snapshot image (taken in {data['snapshot_s']:.2f} s) | "
        f"{data['snapshot_bytes'] / mib:.1f} |",
        f"| a fresh sandbox's image (baseline) | {data['fresh_bytes'] / mib:.2f} |",
        f"| a fork's image, just made | {data['fork_bytes'] / mib:.2f} |",
        f"| the fork's image after it wrote 4 KB over one of the snapshot's files | "
        f"{data['fork_bytes_after'] / mib:.2f} (+{grew / 1024:.0f} KiB) |",
    ]
    return "\n".join(
        [
            f"## Fork latency ({data['forks']} forks of a {data['files']}-file, "
            f"{data['source_bytes'] / mib:.0f} MiB environment; interleaved with fresh sandboxes)",
            "",
            *rows,
            "",
            *disk,
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forks", type=int, default=20)
    parser.add_argument("--env-mib", type=int, default=300)
    args = parser.parse_args()
    print(report(measure(args.forks, args.env_mib)))


if __name__ == "__main__":
    main()
