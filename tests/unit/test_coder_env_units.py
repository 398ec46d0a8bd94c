"""coder's environment parts, pure: upload batches under the daemon's caps, which first test
runs are environment errors (not bugs), and the setup recipe derived from a repository."""

from __future__ import annotations

import json

from coder.sandbox import MAX_BATCH_BYTES, Caps, batches, wire_size
from sandboxd.models import MAX_FILES, Info


def info(**fields: object) -> Info:
    limits = {"wall_time_s": 10, "cpu_time_s": 10, "memory_mib": 64, "pids": 8, "disk_mib": 8}
    base = {
        "version": "x",
        "backend": "nsjail",
        "backend_version": "x",
        "default_limits": limits,
        "max_limits": limits,
        "max_concurrent_runs": 1,
        "max_queued_runs": 1,
        "max_request_bytes": 32 << 20,
        "active_runs": 0,
        "queued_runs": 0,
        "capabilities": {
            "languages": ["bash"],
            "network_modes": ["none"],
            "cgroup_version": 2,
            "limits_enforced": [],
            "seccomp": True,
        },
        **fields,
    }
    return Info.model_validate(base)


def test_batches_stay_under_the_file_cap() -> None:
    files = {f"f{i:04d}.txt": b"x" for i in range(2500)}
    sizes = [len(b) for b in batches(files, set(), Caps())]
    assert sizes == [MAX_FILES, MAX_FILES, 500]


def test_batches_stay_under_the_byte_cap_and_keep_every_file() -> None:
    files = {f"big{i}": bytes(300_000) for i in range(40)} | {"x.sh": b"#!/bin/sh\n"}
    caps = Caps(max_files=1000, max_bytes=1 << 20)
    got = list(batches(files, {"x.sh"}, caps))
    for batch in got:
        assert sum(wire_size(f.path, f.data()) for f in batch) <= caps.max_bytes
        # the request body that carries it is under the cap too
        assert len(json.dumps([f.model_dump() for f in batch])) <= caps.max_bytes
    flat = [f for b in got for f in b]
    assert sorted(f.path for f in flat) == sorted(files)
    assert [f.executable for f in flat if f.path == "x.sh"] == [True]


def test_caps_follow_the_daemon() -> None:
    assert Caps.from_info(None) == Caps(MAX_FILES, MAX_BATCH_BYTES)
    small = Caps.from_info(info(max_request_bytes=2 << 20))
    assert small.max_bytes < 2 << 20 and small.max_files == MAX_FILES
    assert Caps.from_info(info()).max_bytes == MAX_BATCH_BYTES
