from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from framebroker.core import Frame, Pipeline, ProcessContext, Rate, Session
from framebroker.plugins import ProcessorRegistry

from framebroker_hud import COLOUR_NAMES, HudColour
from framebroker_hud.synthetic import BGR, HUD_REGION, GameScreen

CTX = ProcessContext(session_id="hud")


def at(image: np.ndarray[Any, Any], ts: float) -> Frame:
    return Frame.from_array(image, meta={"timestamp": ts})


@pytest.mark.parametrize(
    ("hud", "name"),
    [
        ((255, 128, 0), "blue"),
        ((0, 0, 230), "red"),
        ((0, 200, 0), "green"),
        ((0, 220, 255), "yellow"),
        ((0, 120, 255), "orange"),
        ((200, 200, 0), "cyan"),
    ],
)
def test_reads_the_hud_bars_colour(screen: GameScreen, hud: BGR, name: str) -> None:
    reading = HudColour(HUD_REGION).read(screen.gameplay(1.0, hud=hud))
    assert reading["colour"] == name
    assert reading["coverage"] > 0.9  # the bar's text is white, the rest its colour
    assert np.abs(np.subtract(reading["bgr"], hud)).max() <= 3


def test_relative_region_serves_every_capture_size() -> None:
    small = HudColour().read(GameScreen(640, 360).gameplay(0.0, hud=(0, 0, 230)))
    full = HudColour().read(GameScreen(1920, 1080, noise=0).gameplay(0.0, hud=(0, 0, 230)))
    assert small["colour"] == full["colour"] == "red"


def test_achromatic_screens_are_black_grey_or_white() -> None:
    hud = HudColour((0.0, 0.0, 1.0, 1.0))
    for level, name in [(10, "black"), (128, "grey"), (240, "white")]:
        image = np.full((20, 20, 3), level, np.uint8)
        assert hud.read(image)["colour"] == name
    assert {"black", "grey", "white"} <= set(COLOUR_NAMES)


def test_a_tiny_frame_still_yields_one_pixel() -> None:
    hud = HudColour((0.99, 0.99, 1.0, 1.0))
    image = np.zeros((4, 4, 3), np.uint8)
    image[3, 3] = (0, 0, 255)
    assert hud.crop(image).shape == (1, 1, 3)
    assert hud.read(image)["colour"] == "red"


def test_since_is_when_the_current_colour_was_first_read(screen: GameScreen) -> None:
    hud = HudColour()
    colours = [(255, 128, 0)] * 3 + [(0, 0, 230)] * 2
    outs = [
        hud.process(at(screen.gameplay(i, hud=c), 50.0 + i), CTX) for i, c in enumerate(colours)
    ]
    readings = [out["hud_colour"] for out in outs if out]
    assert [r["colour"] for r in readings] == ["blue"] * 3 + ["red"] * 2
    assert [r["since"] for r in readings] == [50.0, 50.0, 50.0, 53.0, 53.0]


def test_a_config_sets_its_rate_without_the_class_knowing(screen: GameScreen) -> None:
    registry = ProcessorRegistry()
    registry.register("hud_colour", HudColour)
    pipeline = registry.pipeline([{"name": "hud_colour", "rate": {"every": 3}}])
    assert HudColour.rate == Rate()
    session = Session("s", pipeline)
    ran = [bool(session.process(at(screen.gameplay(i / 30), i / 30)).ran) for i in range(7)]
    assert ran == [True, False, False, True, False, False, True]


def test_snapshot_and_restore(screen: GameScreen) -> None:
    a = HudColour()
    a.process(at(screen.gameplay(0.0), 7.0), CTX)
    b = HudColour()
    b.restore(a.snapshot() or {})
    out = b.process(at(screen.gameplay(1.0), 8.0), CTX)
    assert out is not None
    assert out["hud_colour"]["since"] == 7.0
    with pytest.raises(ValueError, match="expected a hud_colour snapshot"):
        b.restore({"colour": "mauve", "since": 1.0})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"region": (0.5, 0.0, 0.4, 1.0)}, "region must be .* got \\(0.5, 0.0, 0.4, 1.0\\)"),
        ({"region": (0.0, 0.0, 1.0)}, "region must be"),
        ({"region": (0.0, 0.0, 1.0, 1.5)}, "region must be"),
        ({"region": "0,0,1,1"}, "region must be"),
        ({"min_saturation": 300}, "min_saturation must be an integer in 0..255, got 300"),
        ({"min_value": -1}, "min_value must be an integer in 0..255, got -1"),
    ],
)
def test_bad_parameters_are_named(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HudColour(**kwargs)


def test_a_frame_without_an_image_is_a_per_frame_error() -> None:
    result = Pipeline([HudColour()]).run(Frame(meta={"timestamp": 1.0}), CTX)
    assert result.errors == [
        {"processor": "hud_colour", "error": "LookupError: this frame carries no image"}
    ]
