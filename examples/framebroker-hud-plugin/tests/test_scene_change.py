from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from framebroker.core import Frame, FrameResult, Pipeline, ProcessContext, Session

from framebroker_hud import HudColour, SceneChange
from framebroker_hud.synthetic import GameScreen

FPS = 30
T0 = 1_556_855_549.3732016  # the seed's epoch timestamp: float rounding included

Script = Callable[[float], np.ndarray[Any, Any]]


def play(session: Session, script: Script, seconds: float, start: float = 0.0) -> list[FrameResult]:
    """Feed ``seconds`` of 30 fps frames drawn by ``script(t)``, as fast as they process."""
    results = []
    for i in range(round(seconds * FPS)):
        t = start + i / FPS
        results.append(session.process(Frame.from_array(script(t), meta={"timestamp": T0 + t})))
    return results


def scene_runs(results: list[FrameResult]) -> list[dict[str, Any]]:
    return [r.outputs["scene_change"] for r in results if "scene_change" in r.ran]


def test_runs_twice_a_second_of_frame_time(screen: GameScreen) -> None:
    session = Session("s", Pipeline([SceneChange()]))
    results = play(session, screen.gameplay, 3.0)
    assert [i for i, r in enumerate(results) if r.ran] == [0, 15, 30, 45, 60, 75]
    assert results[1].skipped == {"scene_change": "not_due"}


def test_cuts_are_counted_and_motion_is_not(screen: GameScreen) -> None:
    session = Session("s", Pipeline([SceneChange()]))
    results = []
    for palette in range(3):
        world = functools.partial(screen.gameplay, palette=palette)
        results += play(session, world, 2.0, 2.0 * palette)
    runs = scene_runs(results)
    assert [r["cut"] for r in runs] == [False] * 4 + [True] + [False] * 3 + [True] + [False] * 3
    assert [r["scene"] for r in runs] == [1] * 4 + [2] * 4 + [3] * 4
    assert runs[4]["distance"] > 0.5
    assert runs[4]["scene_start"] == pytest.approx(T0 + 2.0)
    assert all(r["motion"] > 0.01 and not r["still"] for r in runs[1:])
    assert session.end().results == {"scene_change": {"scenes": 3, "still_s": 0.0}}


def hud_pipeline() -> Pipeline:
    return Pipeline([SceneChange(pause=["hud_colour"]), HudColour()])


def test_a_still_screen_pauses_the_hud_until_it_moves(screen: GameScreen) -> None:
    session = Session("s", hud_pipeline())
    results = play(session, screen.gameplay, 1.0)
    results += play(session, lambda t: screen.menu(), 3.0, 1.0)
    results += play(session, screen.gameplay, 1.0, 4.0)
    hud_ran = [i for i, r in enumerate(results) if "hud_colour" in r.ran]
    # Still since the menu showed at 1.0 s, for still_after (1 s): paused from 2.0 s to 4.0 s,
    # switched on the very frame the scene processor saw it, since it runs first.
    assert hud_ran == list(range(60)) + list(range(120, 150))
    assert results[60].skipped == {"hud_colour": "disabled"}
    assert results[61].skipped == {"scene_change": "not_due", "hud_colour": "disabled"}
    assert results[60].outputs["scene_change"]["still"] is True
    assert results[120].outputs["scene_change"]["cut"] is True
    assert results[120].outputs["hud_colour"]["colour"] == "blue"
    assert results[45].outputs["hud_colour"]["colour"] == "black"  # the menu, not yet still
    assert session.end().results["scene_change"] == {"scenes": 3, "still_s": 2.0}


def test_a_resumed_session_keeps_the_hud_paused(screen: GameScreen) -> None:
    before = Session("s", hud_pipeline())
    play(before, screen.gameplay, 1.0)
    play(before, lambda t: screen.menu(), 1.5, 1.0)
    state = before.snapshot()
    assert state["disabled"] == ["hud_colour"]

    after = Session("s", hud_pipeline())
    after.restore(state)
    results = play(after, lambda t: screen.menu(), 1.0, 2.5)
    assert all(r.skipped.get("hud_colour") == "disabled" for r in results)
    assert all(r["still"] and r["scene"] == 2 for r in scene_runs(results))
    results = play(after, screen.gameplay, 0.5, 3.5)
    assert results[0].ran == ["scene_change", "hud_colour"]
    assert results[0].outputs["scene_change"]["scene"] == 3


def test_a_pause_name_not_in_the_pipeline_is_reported_on_each_due_frame(
    screen: GameScreen,
) -> None:
    session = Session("s", Pipeline([SceneChange(pause=["hud"]), HudColour()]))
    results = play(session, screen.gameplay, 1.0)
    errors = [r.errors for r in results if r.errors]
    assert len(errors) == 2
    assert errors[0] == [
        {
            "processor": "scene_change",
            "error": "ValueError: no processor named 'hud' in this pipeline; "
            "known: 'scene_change', 'hud_colour'",
        }
    ]
    assert all("hud_colour" in r.ran for r in results)


def test_snapshot_validation() -> None:
    scene = SceneChange()
    scene.restore({"scene": 4, "scene_start": 1.0, "still": False, "still_s": 0.5})
    with pytest.raises(ValueError, match="expected a scene_change snapshot"):
        scene.restore({"scene": -1, "scene_start": 1.0, "still": False, "still_s": 0.0})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pause": "hud_colour"}, "pause must be a list of processor names, got 'hud_colour'"),
        ({"pause": [1]}, "pause must be a list of processor names"),
        ({"cut_threshold": 0}, "cut_threshold must be a number in \\(0, 1\\], got 0"),
        ({"still_threshold": 2}, "still_threshold must be a number in \\[0, 1\\], got 2"),
        ({"still_after": float("inf")}, "still_after must be a number in \\[0, 3600\\]"),
        ({"still_after": True}, "still_after must be a number"),
    ],
)
def test_bad_parameters_are_named(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SceneChange(**kwargs)


def test_the_first_frame_needs_an_image() -> None:
    result = Pipeline([SceneChange()]).run(Frame(), ProcessContext(session_id="s"))
    assert result.errors[0]["error"] == "LookupError: this frame carries no image"
