"""What the first install prints: nothing but framebroker's own lines. Setuptools warns on
every build of a project whose ``license`` is a TOML table or that also names its license
in a classifier (deprecated since setuptools 77); pip speaks only when it fails."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_license_is_an_spdx_expression_and_named_once() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project, build = pyproject["project"], pyproject["build-system"]
    assert isinstance(project["license"], str)
    assert re.fullmatch(r"[A-Za-z0-9.\-+ ()]+", project["license"])
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]
    # The setuptools that reads an SPDX string without a warning: 77 and later.
    found = [re.fullmatch(r"setuptools>=(\d+)", r) for r in build["requires"]]
    assert [int(m[1]) for m in found if m] >= [77], build["requires"]


def test_the_scripts_install_quietly() -> None:
    """Every pip install of the two README commands goes through ``quietly`` (its output
    shown only if it fails) or is ``-q``."""
    calls = []
    for script in ("_venv.sh", "serve.sh", "test.sh"):
        for line in (ROOT / "scripts" / script).read_text().splitlines():
            call = line.strip()
            if call.startswith("#") or not re.search(r"\bpip\b.*\binstall\b|^pip_install ", call):
                continue
            calls.append(call)
            assert call.startswith(("quietly ", "pip_install ")) or " -q " in call, (script, call)
    assert len(calls) >= 4, calls  # the scripts were read: pip, the package, the models
