"""A synthetic game screen for the plugin's tests."""

from __future__ import annotations

import pytest

from framebroker_hud.synthetic import GameScreen


@pytest.fixture
def screen() -> GameScreen:
    return GameScreen()
