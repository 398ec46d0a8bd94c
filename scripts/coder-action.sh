#!/usr/bin/env bash
# Run coder in CI mode on this checkout. Only when the status is `fixed`: commit the patch on a
# new branch, push it, and (with CODER_OPEN_PR=1) open a *draft* pull request with gh.
# Exit code: coder's (0 fixed or already passing, 1 not fixed, 2 usage, 3 infrastructure).
set -euo pipefail

repo="${CODER_REPO:-$PWD}"
out="${CODER_OUT:-$repo/.coder/ci}"
coder_bin="${CODER_BIN:-coder}"
args=(solve "$repo" --ci --out-dir "$out" --test "${CODER_TEST:-pytest -q}")
[ -n "${CODER_CONFIG:-}" ] && args+=(--config "$CODER_CONFIG")
[ -n "${CODER_MODEL:-}" ] && args+=(--model "$CODER_MODEL")
[ -n "${CODER_REVIEWER_MODEL:-}" ] && args+=(--reviewer-model "$CODER_REVIEWER_MODEL")
[ -n "${CODER_BASE_URL:-}" ] && args+=(--base-url "$CODER_BASE_URL")
[ -n "${CODER_CANDIDATES:-}" ] && args+=(--candidates "$CODER_CANDIDATES")
[ -n "${CODER_MAX_ITERATIONS:-}" ] && args+=(--max-iterations "$CODER_MAX_ITERATIONS")
[ -n "${CODER_MAX_COST_USD:-}" ] && args+=(--max-cost-usd "$CODER_MAX_COST_USD")
[ -n "${CODER_SETUP:-}" ] && args+=(--setup "$CODER_SETUP")

set +e
$coder_bin "${args[@]}"
code=$?
set -e
if [ ! -f "$out/result.json" ]; then
  echo "coder-action: coder wrote no result (exit $code)" >&2
  exit "$code"
fi
status="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["status"])' "$out/result.json")"
echo "coder-action: status=$status exit=$code"
if [ "$status" != "fixed" ]; then
  exit "$code"  # nothing is pushed unless the tests were fixed
fi

branch="${CODER_BRANCH_PREFIX:-coder/fix-}${GITHUB_RUN_ID:-$(date +%s)}"
git -C "$repo" checkout -q -b "$branch"
git -C "$repo" apply --index "$out/patch.diff"
git -C "$repo" -c user.name="${CODER_GIT_NAME:-coder}" -c user.email="${CODER_GIT_EMAIL:-coder@localhost}" \
  commit -q -m "coder: make the failing tests pass" -m "$(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
n, before, trace = r["iterations"], r["tests_before"]["summary"], r["trace_id"]
plural = "" if n == 1 else "s"
print(f"Fixed in {n} iteration{plural}; tests before: {before}.")
chosen, total, coverage = r.get("chosen_candidate"), len(r.get("candidates") or []), r.get("coverage")
if chosen:
    print(f"Candidate {chosen} of {total} chosen; {coverage}.")
print(f"Trace id {trace}.")' "$out/result.json")"
git -C "$repo" push -q "${CODER_REMOTE:-origin}" "$branch"
echo "coder-action: pushed $branch"

if [ "${CODER_OPEN_PR:-0}" = "1" ]; then
  (cd "$repo" && gh pr create --draft --head "$branch" \
    --title "coder: make the failing tests pass" \
    --body "Patch written by coder's writer agent and approved by its reviewer agent; every test run happened in sandboxd. Review it like any other change.")
fi
