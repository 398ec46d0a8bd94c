# One entry point for people and CI. Every target installs what it needs first.
.PHONY: setup run test bench

setup:
	@scripts/setup.sh

run: setup
	@scripts/quickstart.sh

test: setup
	@scripts/test.sh

bench: setup
	.venv/bin/python -m bench.run --out bench/RESULTS.md
