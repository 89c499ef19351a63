"""Both processors configured the way a server config names them, over a short match."""

from __future__ import annotations

from collections import Counter
from typing import Any

from framebroker.core import Frame, FrameResult, Session
from framebroker.plugins import ProcessorRegistry

from framebroker_hud import HudColour, SceneChange
from framebroker_hud.synthetic import GameScreen

FPS = 30
SPECS: list[dict[str, Any]] = [
    {"name": "scene_change", "pause": ["hud_colour"]},
    {"name": "hud_colour", "rate": {"every": 2}},
]


def match(screen: GameScreen, session: Session, *, arrival: float = 1.0) -> list[FrameResult]:
    """2 s on the blue team, a cut to a red-team round for 2 s, a 3 s menu, 1 s of play.

    Frames arrive ``arrival`` times as fast as they were captured (1: live; 0: all at once).
    """
    results = []
    for i in range(8 * FPS):
        t = i / FPS
        if t < 2:
            image = screen.gameplay(t, palette=0, hud=(255, 128, 0))
        elif t < 4:
            image = screen.gameplay(t, palette=1, hud=(0, 0, 230))
        elif t < 7:
            image = screen.menu()
        else:
            image = screen.gameplay(t, palette=2, hud=(0, 0, 230))
        frame = Frame.from_array(image, meta={"timestamp": 1e9 + t}, received_at=2e9 + t * arrival)
        results.append(session.process(frame))
    return results


def registry() -> ProcessorRegistry:
    reg = ProcessorRegistry()
    reg.register("hud_colour", HudColour)
    reg.register("scene_change", SceneChange)
    return reg


def test_a_match(screen: GameScreen) -> None:
    session = Session("match", registry().pipeline(SPECS))
    results = match(screen, session)

    reasons = Counter(r.skipped.get("hud_colour", "ran") for r in results)
    # Paused from 5.0 s (menu at 4.0 s + 1 s still) to 7.0 s: 60 frames; of the other 180,
    # every second one is due.
    assert reasons == {"disabled": 60, "ran": 90, "not_due": 90}
    colours = [
        (round(r.frame.timestamp - 1e9, 2), r.outputs["hud_colour"]["colour"])
        for r in results
        if "hud_colour" in r.ran
    ]
    assert colours[0] == (0.0, "blue")
    assert {c for t, c in colours if t < 2} == {"blue"}
    assert {c for t, c in colours if 2 <= t < 4} == {"red"}
    assert {c for t, c in colours if 4 <= t < 7} == {"black"}  # the menu, before the pause
    assert {c for t, c in colours if t >= 7} == {"red"}
    summary = session.end()
    assert summary.results == {"scene_change": {"scenes": 4, "still_s": 2.0}}


def test_replayed_faster_than_realtime_it_is_the_same_match(screen: GameScreen) -> None:
    """Rates follow the frames' timestamps, so how fast frames arrive changes nothing."""
    runs = []
    for arrival in (1.0, 0.0):
        session = Session("match", registry().pipeline(SPECS))
        runs.append([(r.ran, r.skipped) for r in match(screen, session, arrival=arrival)])
    assert runs[0] == runs[1]
