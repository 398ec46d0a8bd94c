"""Hello-world latency: sandboxd's HTTP API (a warm jail; a jail forked by the fork server;
a jail built by nsjail for the run) vs a bare interpreter started as a subprocess vs AutoGen's
LocalCommandLineCodeExecutor (unsandboxed); and bash and node the same three ways vs bare,
each against its own bare baseline.

All are measured in the same run, interleaved, so that the machine's noise hits them alike;
figures are ratios against the bare baseline. Before each pooled call the bench waits until
the daemon is idle (pool refilled, nothing in preparation), as after any pause between runs,
and both the baseline and the pooled call follow the same 50 ms pause; back-to-back load is
the HumanEval and soak benches' business. Usage:
    python -m bench.hello_latency [--iterations N] [--out FILE]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.jail_floor import JailFloor
from bench.machine import BARE_ENV, describe
from bench.peers import PeerWorker
from sandboxd.client import SyncClient
from sandboxd.testing import Daemon

HELLO = 'print("hello")'
JAIL_PYTHON = "/usr/bin/python3"
IDLE_WAIT_S = 10.0
SETTLE_S = 0.05
LABELS = {
    "bare": f"bare `{JAIL_PYTHON} -c 'print(\"hello\")'` as a subprocess (baseline)",
    "pool": "sandboxd HTTP API, nsjail, warm pool",
    "fork": "sandboxd HTTP API, nsjail, no pool: a jail forked per run by the fork server",
    "cold": "sandboxd HTTP API, nsjail, no pool, no fork server: a jail built by nsjail per run",
    "autogen": "AutoGen `LocalCommandLineCodeExecutor` (no isolation at all)",
    "floor_py": "floor of a jail per run: nsjail alone (the daemon's arguments, no daemon, "
    "no cgroup) starting `python3 -u main.py`",
    "floor_true": "the same nsjail starting `/bin/true`",
    "floor_prestarted": "the same nsjail starting `python3 -u main.py`, timed from handing its "
    "config to an nsjail already started and waiting for it",
}
#: Languages served by the exec pool: the code and the bare command it is compared with.
EXEC_LANGUAGES = {
    "bash": ("echo hello", ["/bin/bash", "-c", "echo hello"]),
    "node": ('console.log("hello")', ["/usr/bin/node", "-e", 'console.log("hello")']),
}
EXEC_LABELS = {
    "bare": "bare `{}` as a subprocess (baseline)",
    "pool": "sandboxd HTTP API, nsjail, exec pool",
    "fork": "sandboxd HTTP API, nsjail, no pool: forked per run, then exec",
    "cold": "sandboxd HTTP API, nsjail, no pool, no fork server (jail built per run)",
}


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def wait_idle(client: SyncClient, name: str = "nsjail/python") -> None:
    """Until one of the daemon's pools is full and prepares nothing (bounded)."""
    deadline = time.monotonic() + IDLE_WAIT_S
    while time.monotonic() < deadline:
        stats = client.info().warm_pools[name]
        if stats.ready >= 1 and stats.preparing == 0:
            return
        time.sleep(0.002)
    raise RuntimeError(f"the warm pool {name} did not refill")


def measure_exec(
    pool: SyncClient, forks: SyncClient, nopool: SyncClient, times: dict[str, float]
) -> None:
    """One interleaved round of each exec-pool language: no pool, forked, bare, pool."""
    for language, (code, bare_argv) in EXEC_LANGUAGES.items():
        t0 = time.perf_counter()
        unpooled = nopool.run(language=language, code=code)
        times[f"{language}_cold"] = time.perf_counter() - t0
        time.sleep(SETTLE_S)
        t0 = time.perf_counter()
        forked = forks.run(language=language, code=code)
        times[f"{language}_fork"] = time.perf_counter() - t0
        time.sleep(SETTLE_S)
        t0 = time.perf_counter()
        bare = subprocess.run(bare_argv, capture_output=True, text=True, env=BARE_ENV)
        times[f"{language}_bare"] = time.perf_counter() - t0
        wait_idle(pool, "nsjail/exec")
        time.sleep(SETTLE_S)
        t0 = time.perf_counter()
        pooled = pool.run(language=language, code=code)
        times[f"{language}_pool"] = time.perf_counter() - t0
        if {bare.stdout, pooled.stdout, unpooled.stdout, forked.stdout} != {"hello\n"}:
            raise RuntimeError(f"{language}: wrong output {bare.stdout!r} {pooled.stdout!r}")


def start_daemons(work: Path) -> tuple[Daemon, Daemon, Daemon]:
    """A daemon as configured by default (warm pool and fork server), one without a warm
    pool (every jail forked), and one without either (every jail built by nsjail)."""
    warm = Daemon(work, "bench-pool").start()
    forked = Daemon(work, "bench-fork", backend={"pool": {"enabled": False}}).start()
    nothing = {"pool": {"enabled": False}, "fork_server": False}
    cold = Daemon(work, "bench-cold", backend=nothing).start()
    return warm, forked, cold


def measure(iterations: int, warmup: int = 5) -> dict[str, list[float]]:
    work = Path(tempfile.mkdtemp(prefix="sandboxd-bench-", dir="/var/tmp"))
    work.chmod(0o711)
    warm, forked, cold = start_daemons(work)
    samples: dict[str, list[float]] = {key: [] for key in LABELS}
    for language in EXEC_LANGUAGES:
        samples.update({f"{language}_{key}": [] for key in EXEC_LABELS})
    try:
        with (
            warm.client() as pool,
            forked.client() as forks,
            cold.client() as nopool,
            PeerWorker() as peer,
            JailFloor() as floor,
        ):
            for i in range(warmup + iterations):
                times: dict[str, float] = {}
                # The cold daemon first: its cleanup (after its response) is over long
                # before the pooled call, which comes last, once the pool is idle again.
                t0 = time.perf_counter()
                unpooled = nopool.run(code=HELLO)
                times["cold"] = time.perf_counter() - t0
                time.sleep(SETTLE_S)
                t0 = time.perf_counter()
                forked_run = forks.run(code=HELLO)
                times["fork"] = time.perf_counter() - t0
                times["floor_py"] = floor.python()
                times["floor_true"] = floor.true()
                times["floor_prestarted"] = floor.python_prestarted()
                t0 = time.perf_counter()
                (agent,) = peer.autogen(HELLO)
                times["autogen"] = time.perf_counter() - t0
                # The same pause before the baseline and before the pooled call: the kernel
                # finishes tearing down the jails above (network namespaces go away later).
                time.sleep(SETTLE_S)
                t0 = time.perf_counter()
                bare = subprocess.run(
                    [JAIL_PYTHON, "-c", HELLO], capture_output=True, text=True, env=BARE_ENV
                )
                times["bare"] = time.perf_counter() - t0
                wait_idle(pool)
                time.sleep(SETTLE_S)
                t0 = time.perf_counter()
                pooled = pool.run(code=HELLO)
                times["pool"] = time.perf_counter() - t0
                outputs = {bare.stdout, pooled.stdout, unpooled.stdout, forked_run.stdout}
                outputs.add(agent["output"])
                if outputs != {"hello\n"}:
                    raise RuntimeError(f"wrong output: {outputs}")
                measure_exec(pool, forks, nopool, times)
                if i >= warmup:
                    for key, value in times.items():
                        samples[key].append(value)
            pools = pool.info().warm_pools
        rounds = warmup + iterations
        if pools["nsjail/python"].hits < rounds:
            raise RuntimeError(f"only {pools['nsjail/python'].hits} pooled runs used a warm jail")
        if pools["nsjail/exec"].hits < rounds * len(EXEC_LANGUAGES):
            raise RuntimeError(f"only {pools['nsjail/exec'].hits} runs used an exec jail")
    finally:
        for daemon in (warm, forked, cold):
            daemon.stop()
    return samples


def report(samples: dict[str, list[float]]) -> str:
    base = statistics.median(samples["bare"])
    rows = ["| what | p50 ms | p90 ms | p50 ratio vs bare |", "|---|---|---|---|"]
    for key, label in LABELS.items():
        p50, p90 = statistics.median(samples[key]), percentile(samples[key], 0.9)
        rows.append(f"| {label} | {p50 * 1e3:.1f} | {p90 * 1e3:.1f} | {p50 / base:.2f}x |")
    n = len(samples["bare"])
    ratio = {key: statistics.median(samples[key]) / base for key in LABELS}
    rows += [
        "",
        f"Targets: warm pool ≤ 0.70x (here {ratio['pool']:.2f}x); a jail per run (no warm "
        f"jail) ≤ 1.00x (issue 20): forked by the fork server, here {ratio['fork']:.2f}x; "
        f"built by nsjail, as before the fork server, {ratio['cold']:.2f}x (nsjail and "
        f"CPython started ahead, with no daemon, no HTTP and no cgroup, take "
        f"{ratio['floor_prestarted']:.2f}x).",
    ]
    exec_rows = ["| what | p50 ms | p90 ms | p50 ratio vs bare |", "|---|---|---|---|"]
    for language, (_, bare_argv) in EXEC_LANGUAGES.items():
        base = statistics.median(samples[f"{language}_bare"])
        for key, label in EXEC_LABELS.items():
            runs = samples[f"{language}_{key}"]
            p50, p90 = statistics.median(runs), percentile(runs, 0.9)
            text = f"{language}: " + label.format(" ".join(bare_argv))
            exec_rows.append(f"| {text} | {p50 * 1e3:.1f} | {p90 * 1e3:.1f} | {p50 / base:.2f}x |")
    return "\n".join(
        [
            f"## Hello latency ({n} interleaved iterations each)",
            "",
            *rows,
            "",
            "### bash and node: the exec pool (ratios against the same language's bare run)",
            "",
            *exec_rows,
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    text = "\n".join(["## Machine", *describe(), "", report(measure(args.iterations))])
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
