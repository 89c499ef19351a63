#!/usr/bin/env python3
"""Refresh the web console's screenshots in ``docs/`` (the README shows them).

They are taken by the browser tests themselves (``tests/e2e/test_console.py``), so a
screenshot always shows a page that just passed its test: this runs that module with
``CONSOLE_SCREENSHOTS`` pointing at the output folder. Needs Debian's ``chromium``
(``scripts/install_browser.sh``) and ``playwright`` in ``.venv``.

Usage::

    .venv/bin/python scripts/screenshots.py [OUTPUT_DIR]   # default: docs/
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", type=Path, default=REPO / "docs")
    args = parser.parse_args()
    output = args.output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CONSOLE_SCREENSHOTS": str(output)}
    command = [sys.executable, "-m", "pytest", "-q", "tests/e2e/test_console.py"]
    done = subprocess.run(command, cwd=REPO, env=env, check=False)
    if done.returncode == 0:
        for shot in sorted(output.glob("console-*.png")):
            print(shot.relative_to(REPO) if shot.is_relative_to(REPO) else shot)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
