"""The example plugin in ``examples/`` works with this framebroker: imported from its source,
and found by name through its entry points as if installed, without touching the environment.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from framebroker.core import Frame, Session
from framebroker.plugins import ENTRY_POINT_GROUP, ProcessorRegistry

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "framebroker-hud-plugin"


@pytest.fixture
def example_src(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The example's source on ``sys.path`` for one test; its modules forgotten afterwards."""
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    yield EXAMPLE / "src"
    for name in [m for m in sys.modules if m.partition(".")[0] == "framebroker_hud"]:
        del sys.modules[name]


def play_a_menu(session: Session) -> list[Any]:
    from framebroker_hud.synthetic import GameScreen

    screen = GameScreen()
    results = []
    for i in range(90):  # 1 s of play, then 2 s of menu, at 30 fps
        t = i / 30
        image = screen.gameplay(t) if t < 1 else screen.menu()
        results.append(session.process(Frame.from_array(image, meta={"timestamp": t})))
    return results


def test_the_example_runs_from_its_source(example_src: Path) -> None:
    registry = ProcessorRegistry()
    pipeline = registry.pipeline(
        [
            {"name": "framebroker_hud.scene:SceneChange", "pause": ["hud_colour"]},
            {"name": "framebroker_hud.hud:HudColour", "rate": {"every": 3}},
        ]
    )
    results = play_a_menu(Session("example", pipeline))
    assert results[0].outputs["hud_colour"]["colour"] == "blue"
    assert results[1].skipped == {"scene_change": "not_due", "hud_colour": "not_due"}
    # The menu shows at 1 s and is still from 2 s: the HUD reader is off from then on.
    assert results[60].ran == ["scene_change"]
    assert results[60].skipped == {"hud_colour": "disabled"}
    assert results[60].outputs["scene_change"]["still"] is True


def test_the_example_loads_by_its_entry_points(
    example_src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    declared: dict[str, str] = project["entry-points"][ENTRY_POINT_GROUP]
    # What pip would write for the package, read from the example's own pyproject.toml.
    dist_info = tmp_path / f"framebroker_hud-{project['version']}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    lines = [f"[{ENTRY_POINT_GROUP}]", *(f"{k} = {v}" for k, v in declared.items())]
    (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    registry = ProcessorRegistry()
    assert {"hud_colour", "scene_change"} <= set(registry.names())
    for name in declared:
        assert registry.build(name).name == name  # the entry point's name is the processor's
    registry.check_request(["scene_change", "hud_colour"])  # a client may ask for them
    pipeline = registry.pipeline([{"name": "scene_change", "pause": ["hud_colour"]}, "hud_colour"])
    results = play_a_menu(Session("example", pipeline))
    assert [r.skipped.get("hud_colour") for r in results].count("disabled") == 30
