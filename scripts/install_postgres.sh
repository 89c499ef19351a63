#!/usr/bin/env bash
# Make sure Debian's PostgreSQL server binaries are there for the tests that run the store on
# a real PostgreSQL (tests/postgres.py starts its own throwaway cluster; nothing listens on
# 5432). Idempotent and quiet: does nothing when initdb is installed; installs the package
# with apt-get when running as root, without Debian's default cluster; otherwise says how
# and leaves it (the PostgreSQL tests then skip).
set -euo pipefail

if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    echo "postgresql: already installed ($(compgen -G '/usr/lib/postgresql/*/bin/initdb' | head -1))"
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "postgresql: not installed; as root run: apt-get install -y postgresql" >&2
    exit 0
fi
echo "postgresql: installing Debian's package with apt-get"
export DEBIAN_FRONTEND=noninteractive
# The tests make clusters of their own: no 'main' cluster started at install.
mkdir -p /etc/postgresql-common
if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
    echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql; } \
        >"$log" 2>&1; then
    cat "$log" >&2
    exit 1
fi
echo "postgresql: installed ($(compgen -G '/usr/lib/postgresql/*/bin/initdb' | head -1))"
