#!/usr/bin/env bash
# Make sure a Docker engine answers; start Debian's dockerd in the background if none does.
set -euo pipefail
if docker info >/dev/null 2>&1; then
  exit 0
fi
log=/var/log/sandboxd-dockerd.log
echo "dockerd: starting (log in $log)"
nohup dockerd >"$log" 2>&1 &
echo $! >/run/sandboxd-dockerd.pid
for _ in $(seq 1 120); do  # at most ~60 s
  docker info >/dev/null 2>&1 && exit 0
  sleep 0.5
done
echo "dockerd: the engine did not come up; see $log" >&2
exit 1
