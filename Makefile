# One entry point for people and CI. Every target installs what it needs first.
.PHONY: setup run test test-unit bench

setup:
	@scripts/setup.sh

run: setup
	@scripts/quickstart.sh

test: setup
	@scripts/test.sh

# The unit tier alone: seconds, as any user (no root, nsjail or Docker); needs `make setup` once.
test-unit:
	.venv/bin/pytest -q tests/unit

bench: setup
	.venv/bin/python -m bench.run --out bench/RESULTS.md
