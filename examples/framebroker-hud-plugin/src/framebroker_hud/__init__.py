"""An example framebroker plugin for game captures (the seed-003 OverTrack rig).

:class:`HudColour` reads a HUD region's dominant colour on every frame it is due;
:class:`SceneChange` looks at the whole screen twice a second of frame time, reports scene
cuts, and switches the HUD reader off while the screen stands still (a menu). Both register
under the entry-point group ``framebroker.processors``, as ``hud_colour`` and ``scene_change``.
"""

from __future__ import annotations

from .hud import COLOUR_NAMES, HudColour
from .scene import SceneChange

__all__ = ["COLOUR_NAMES", "HudColour", "SceneChange"]
