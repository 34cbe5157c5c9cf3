#!/usr/bin/env bash
# Install the system packages the tests use: Chromium (gallery page), PostgreSQL, Slurm + munge (tests/scale).
#
# The tests start their own private instances (temporary folders, free ports, SLURM_CONF, a private munge key)
# and stop them by pid, so nothing machine-wide is started here. Idempotent; a package that cannot be installed
# prints a warning, and the tests that need it skip with the reason.
set -uo pipefail
export DEBIAN_FRONTEND=noninteractive
warn() { echo "services.sh: warning: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
  warn "not root: cannot install system packages; tests that need missing ones will skip"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  warn "no apt-get: install chromium, postgresql, slurm-wlm and munge yourself"
  exit 0
fi

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v slurmctld >/dev/null 2>&1 || need+=(slurm-wlm)
command -v munged >/dev/null 2>&1 || need+=(munge)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq || warn "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null || warn "could not install ${need[*]}"
fi
exit 0
