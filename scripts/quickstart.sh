#!/usr/bin/env bash
# Start the daemon on 127.0.0.1:8765, show one run through the HTTP API, keep serving.
set -euo pipefail
cd "$(dirname "$0")/.."
port="${SANDBOXD_PORT:-8765}"

.venv/bin/sandboxd serve --port "$port" &
daemon=$!
trap 'kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null' INT TERM EXIT

for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
  kill -0 "$daemon" 2>/dev/null || { echo "quickstart: the daemon did not start" >&2; exit 1; }
  sleep 0.1
done

token_file="${SANDBOXD_STATE_DIR:-/var/lib/sandboxd}/admin.token"
token="$(cat "$token_file")"
echo "\$ curl -s localhost:$port/v1/runs -H \"Authorization: Bearer \$(cat $token_file)\" -d '{\"language\":\"python\",\"code\":\"print(\\\"hello\\\")\"}'"
curl -s "localhost:$port/v1/runs" -H "Authorization: Bearer $token" \
  -H 'content-type: application/json' -d '{"language":"python","code":"print(\"hello\")"}'
echo
echo "sandboxd is serving on http://127.0.0.1:$port (Ctrl-C stops it)"
wait "$daemon"
