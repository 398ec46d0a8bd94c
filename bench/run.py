"""Run every benchmark and write one results file with the machine's description.

python -m bench.run [--iterations N] [--soak-runs N] [--realrepos] [--out bench/RESULTS.md]

`--realrepos` adds coder on real PyPI projects (bench/realrepos.py): opt-in, as it downloads
sdists (once, cached) and its setups install from the host's package index.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench import (
    autogen_executors,
    coder_candidates,
    coder_overhead,
    context_latency,
    docker_latency,
    fork_latency,
    hello_latency,
    humaneval,
    mcp_latency,
    realrepos,
    sandbox_latency,
    soak,
)
from bench.machine import describe
from sandboxd.testing import Daemon


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--soak-runs", type=int, default=10_000)
    parser.add_argument("--realrepos", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    header = ["# sandboxd benchmarks", "", "## Machine", *describe(), ""]
    sections = [hello_latency.report(hello_latency.measure(args.iterations))]
    sections.append(sandbox_latency.report(sandbox_latency.measure(args.iterations)))
    sections.append(humaneval.report(humaneval.measure()))
    sections.append(autogen_executors.report(autogen_executors.measure()))
    sections.append(mcp_latency.report(mcp_latency.measure()))
    sections.append(docker_latency.report(docker_latency.measure()))
    sections.append(
        soak.report(soak.measure(args.soak_runs), soak.measure(args.soak_runs, fork_server=False))
    )
    sections.append(fork_latency.report(fork_latency.measure()))
    sections.append(context_latency.report(context_latency.measure(args.iterations)))
    work = Path(tempfile.mkdtemp(prefix="sandboxd-bench-", dir="/var/tmp"))
    work.chmod(0o711)
    daemon = Daemon(work, "coder-bench").start()
    try:
        sections.append(coder_overhead.report(coder_overhead.measure(daemon)))
        sections.append(coder_candidates.report(coder_candidates.measure(daemon)))
    finally:
        daemon.stop()
    if args.realrepos:
        daemon = realrepos.start_daemon()
        try:
            sections.append(realrepos.report(realrepos.measure(daemon)))
        finally:
            realrepos.stop_daemon(daemon)
    text = "\n".join(header + sections)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
