#!/usr/bin/env bash
# Make sure Debian's `redis-server` is there for the cluster tests (tests/cluster/), which start
# their own servers on free loopback ports. Idempotent and quiet: does nothing when
# redis-server is on PATH; installs it with apt-get when running as root; otherwise says how
# and fails, since the cluster tests fail without it (they never skip).
# The package's own service is not used: a fresh install may start one on port 6379; the
# tests neither need nor touch it.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
    echo "redis-server: already installed ($(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/'))"
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "redis-server: not installed; as root run: apt-get install -y redis-server" >&2
    exit 1
fi
echo "redis-server: installing Debian's package with apt-get"
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { apt-get install -y -qq --no-install-recommends redis-server ||
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server; }
    } >"$log" 2>&1; then
    cat "$log" >&2
    exit 1
fi
echo "redis-server: installed ($(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/'))"
