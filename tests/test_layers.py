"""The import graph has no upward arrow (ARCHITECTURE.md draws the layers).

Each package of ``framebroker`` may import the ones this table allows and nothing else of
``framebroker``; the test reads every module's imports (at any depth, ``TYPE_CHECKING``
blocks included: a type is a dependency too).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "framebroker"

FOUNDATION = {"errors", "config", "logs", "compat", "__init__", "__version__"}
"""Imported by anyone. ``config`` and ``logs`` only import ``errors``, and the package's
``__init__`` re-exports the library, so importing it from inside is refused below."""

ALLOWED: dict[str, set[str]] = {
    "core": {"core", "errors"},
    "media": {"media", "core", "errors"},
    "detectors": {"detectors", "core", "media", "errors"},
    "processors": {"processors", "detectors", "core", "media", "errors"},
    "plugins": {"plugins", "core", "errors"},
    "sessions": {"sessions", "core", "errors"},
    "storage": {"storage", "core", "people", "errors", "config"},
    "runtime": {"runtime", "sessions", "core", "plugins", "logs", "errors", "config"},
    # People and transports type against people.records' protocols; storage implements them.
    "people": {"people", "sessions", "core", "media", "processors", "errors", "config"},
    "video_analysis": {"video_analysis", "sessions", "core", "media", "processors", "errors"}
    | {"config"},
    "transports": {"transports", "sessions", "people", "video_analysis", "core", "media"}
    | {"plugins", "errors", "config", "logs"},
    "client": {"client", "media", "core", "errors"},
}
"""What each layer may import. Missing from every set: ``server`` and ``cli`` (nothing
imports the assembly), ``runtime`` for everything that serves clients (they speak to
``sessions``), ``transports`` for the services beneath them."""


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> set[str]:
    """The ``framebroker`` modules ``path`` imports, as dotted names."""
    module_parts = ["framebroker", *path.relative_to(SRC).with_suffix("").parts]
    if module_parts[-1] == "__init__":
        module_parts = module_parts[:-1]
        package = module_parts
    else:
        package = module_parts[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
                if node.module is None:  # from . import x
                    found.update(f"{target}.{alias.name}" for alias in node.names)
                    continue
            else:
                target = node.module or ""
            if target.startswith("framebroker"):
                found.add(target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("framebroker"))
    return found


MODULES = sorted(p for p in SRC.rglob("*.py") if p.relative_to(SRC).parts[0] != "ui")


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_no_layer_imports_what_sits_above_it(layer: str) -> None:
    allowed = ALLOWED[layer] | (FOUNDATION - {"__init__"})
    wrong = []
    for path in MODULES:
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[0] != layer and not (len(parts) == 1 and parts[0] == layer):
            continue
        for target in sorted(_imports(path)):
            package = _package(target)
            if package not in allowed:
                wrong.append(f"{path.relative_to(SRC)} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_the_foundation_imports_only_errors() -> None:
    for name in ("errors", "config", "logs", "compat"):
        targets = {_package(t) for t in _imports(SRC / f"{name}.py")}
        assert targets <= {"errors", "compat", name, "people"}, (name, targets)


def test_every_package_has_a_place_in_the_table() -> None:
    """A new package must be given its layer here, or this test says so."""
    top = {p.relative_to(SRC).parts[0].removesuffix(".py") for p in MODULES}
    placed = set(ALLOWED) | FOUNDATION | {"server", "cli", "tools", "__main__", "data"}
    assert top <= placed, sorted(top - placed)
