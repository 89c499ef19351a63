#!/usr/bin/env bash
# Make sure Debian's `chromium` is there for the browser tests (tests/e2e/test_console.py).
# Idempotent and quiet: does nothing when chromium is on PATH; installs it with apt-get when
# running as root; otherwise says how and leaves it (the browser tests then skip).
# The tests drive this system browser through Playwright; never `playwright install`.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    echo "chromium: already installed ($(command -v chromium))"
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "chromium: not installed; as root run: apt-get install -y chromium" >&2
    exit 0
fi
echo "chromium: installing Debian's package with apt-get"
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium \
        fonts-dejavu-core; } >"$log" 2>&1; then
    cat "$log" >&2
    exit 1
fi
echo "chromium: installed ($(command -v chromium))"
