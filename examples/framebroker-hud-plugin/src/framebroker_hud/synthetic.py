"""Frames that look enough like a game to try the plugin without one: a scrolling world with
moving sprites, a coloured HUD bar and a crosshair, and a still menu screen.

The tests use them, and so can a user checking a config before pointing a capture at it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from numpy.typing import NDArray

__all__ = ["BGR", "HUD_REGION", "PALETTES", "GameScreen"]

BGR = tuple[int, int, int]

HUD_REGION = (0.02, 0.9, 0.3, 0.95)
"""Where :meth:`GameScreen.gameplay` draws its HUD bar, as :class:`HudColour` reads it."""

PALETTES: tuple[tuple[BGR, BGR], ...] = (
    ((235, 206, 135), (80, 160, 210)),  # desert: light blue sky, sand
    ((120, 90, 60), (40, 110, 30)),  # forest at dusk: slate sky, dark green
    ((70, 20, 40), (90, 60, 150)),  # alien night: deep purple sky, rust-red ground
)
"""Sky and ground colours of the worlds; switching palettes is a scene cut."""


@dataclass(slots=True)
class GameScreen:
    """Draws BGR frames of ``width`` x ``height``; ``noise`` is the sigma of per-frame noise
    standing in for video compression, so a still screen is not bit-identical."""

    width: int = 640
    height: int = 360
    noise: float = 2.0
    seed: int = 0
    _worlds: dict[int, NDArray[np.uint8]] = field(init=False, repr=False)
    _noise: list[NDArray[np.int16]] = field(init=False, repr=False)
    _drawn: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.width < 64 or self.height < 36:
            raise ValueError(
                f"a screen needs at least 64x36 pixels, got {self.width}x{self.height}"
            )
        self._worlds = {}
        # A few noise fields drawn once and taken in turn: fresh noise per frame would cost
        # more than everything else here.
        rng = np.random.default_rng(self.seed)
        shape = (self.height, self.width, 3)
        count = 5 if self.noise > 0 else 0
        self._noise = [rng.normal(0, self.noise, shape).astype(np.int16) for _ in range(count)]

    def _world(self, palette: int) -> NDArray[np.uint8]:
        """Sky, ground and a fixed pattern, twice the screen's width so it can scroll."""
        palette %= len(PALETTES)
        if palette not in self._worlds:
            w, h = self.width, self.height
            sky, ground = PALETTES[palette]
            rng = np.random.default_rng(1000 + palette)
            small = rng.integers(-40, 40, (h // 8, w // 4)).astype(np.float32)
            world = np.empty((h, 2 * w, 3), np.int16)
            world[: h // 2], world[h // 2 :] = sky, ground
            world += cv2.resize(small, (2 * w, h)).astype(np.int16)[:, :, None]
            self._worlds[palette] = np.clip(world, 0, 255).astype(np.uint8)
        return self._worlds[palette]

    def _finish(self, canvas: NDArray[np.uint8]) -> NDArray[np.uint8]:
        if self.noise <= 0:
            return canvas
        self._drawn += 1
        noisy = canvas.astype(np.int16) + self._noise[self._drawn % len(self._noise)]
        out: NDArray[np.uint8] = np.clip(noisy, 0, 255).astype(np.uint8)
        return out

    def gameplay(
        self, t: float, *, palette: int = 0, hud: BGR = (255, 128, 0)
    ) -> NDArray[np.uint8]:
        """The world at time ``t`` seconds (it scrolls and its sprites move), HUD bar ``hud``."""
        w, h = self.width, self.height
        horizon = h // 2
        shift = int(t * 0.25 * w) % w
        canvas = np.ascontiguousarray(self._world(palette)[:, shift : shift + w])
        for k in range(4):  # sprites crossing the screen at their own speeds
            x = int((0.2 * k + 0.3 * t * (k + 1)) % 1.0 * w)
            y = horizon + int((0.1 + 0.08 * k) * h)
            cv2.circle(canvas, (x, y), max(h // 30, 3), (30, 30, 200 - 40 * k), -1)
        x0, y0, x1, y1 = HUD_REGION
        p0 = (int(x0 * w), int(y0 * h))
        p1 = (int(np.ceil(x1 * w)) - 1, int(np.ceil(y1 * h)) - 1)
        cv2.rectangle(canvas, p0, p1, hud, -1)
        cv2.putText(
            canvas, "200", (p0[0] + 4, p1[1] - 2), cv2.FONT_HERSHEY_PLAIN, 0.8, (255, 255, 255), 1
        )
        cx, cy = w // 2, h // 2
        cv2.line(canvas, (cx - 8, cy), (cx + 8, cy), (255, 255, 255), 1)
        cv2.line(canvas, (cx, cy - 8), (cx, cy + 8), (255, 255, 255), 1)
        return self._finish(canvas)

    def menu(self, *, title: str = "PAUSED") -> NDArray[np.uint8]:
        """A still menu: dark backdrop, panels and text, no HUD bar."""
        w, h = self.width, self.height
        canvas = np.full((h, w, 3), (40, 32, 28), np.uint8)
        for i in range(4):
            top = int(h * (0.3 + 0.13 * i))
            cv2.rectangle(canvas, (w // 3, top), (2 * w // 3, top + h // 12), (90, 80, 70), -1)
        cv2.putText(
            canvas,
            title,
            (w // 3, int(h * 0.2)),
            cv2.FONT_HERSHEY_SIMPLEX,
            h / 400,
            (230, 230, 230),
            2,
        )
        return self._finish(canvas)
