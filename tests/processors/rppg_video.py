"""Made-up camera footage of a face whose skin pulses at a known rate, for the heart-rate tests.

The face is the astronaut portrait of ``shared/data/media`` (BlazeFace finds it for real).
Its skin pixels (a YCrCb skin-colour mask) are scaled on each channel by
``1 + amplitude * p(t) * PULSE_BGR``: ``p`` a unit pulse wave at ``bpm`` with a second
harmonic, as a finger-tip or camera PPG looks, and ``PULSE_BGR`` the relative strength of the
blood-volume pulse on each channel for skin (de Haan and van Leest, 2014: stronger in green).
On top of that: light that drifts slowly (a cloud, auto-exposure), a head that sways by a few
pixels, and sensor noise on every pixel of the 640x480 frame.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from framebroker.core import Frame

MEDIA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "media"

Image = NDArray[np.uint8]

PULSE_BGR = np.array([0.53, 0.77, 0.33], np.float32)
"""Relative pulse amplitude of blue, green, red on skin (de Haan's P_bv, in BGR order)."""

EPOCH = 1_700_000_000.0
"""Frame clocks start here: epoch seconds, whose float differences are slightly off."""


def astronaut() -> Image:
    path = MEDIA / "astronaut.png"
    if not path.is_file():
        pytest.skip(f"sample image {path} is absent (see shared/data/media/README.md)")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"cannot decode {path}"
    return np.asarray(image, dtype=np.uint8)


class PulsingFace:
    """Frames of the astronaut's head at time ``t`` (seconds from the start), pulsing at ``bpm``.

    ``amplitude`` is the pulse's relative colour change on the green channel's scale (0.005:
    half a percent, about one grey level, as a real pulse on a webcam); ``bpm = 0`` gives a
    face with no pulse at all. ``noise`` is the standard deviation of the per-pixel sensor
    noise in grey levels, ``sway_px`` the head's motion, ``drift`` the light's relative swing.
    While ``away`` (start, end) seconds, the person has stepped out: only the wall shows.
    """

    def __init__(
        self,
        bpm: float,
        *,
        amplitude: float = 0.005,
        noise: float = 4.0,
        sway_px: int = 3,
        drift: float = 0.1,
        head_width: int = 320,
        size: tuple[int, int] = (480, 640),
        away: tuple[float, float] | None = None,
        seed: int = 0,
    ) -> None:
        self.bpm = bpm
        self.away = away
        self.amplitude = amplitude
        self.sway_px = sway_px
        self.drift = drift
        self.size = size
        portrait = astronaut()[0:240, 100:350]
        scale = head_width / portrait.shape[1]
        head = np.asarray(
            cv2.resize(
                portrait,
                (head_width, round(portrait.shape[0] * scale)),
                interpolation=cv2.INTER_AREA,
            ),
            dtype=np.uint8,
        )
        ycrcb = cv2.cvtColor(head, cv2.COLOR_BGR2YCrCb)
        skin = cv2.inRange(ycrcb, (40, 135, 85), (255, 180, 135)) > 0
        self.head = head.astype(np.float32)
        self.skin = self.head * skin[:, :, None].astype(np.float32)
        self.skin_fraction = float(skin.mean())
        h, w = size
        self.origin = ((w - head.shape[1]) // 2, max(0, (h - head.shape[0]) // 2 - 20))
        self.background = np.float32(105.0)
        rng = np.random.default_rng(seed)
        # A bank of noise frames drawn at random per frame: fresh noise each frame costs more
        # than the processor under test, and drawing (not cycling) adds no period of its own.
        self._noise = [
            np.round(rng.normal(0.0, noise, (h, w, 3))).astype(np.int16) for _ in range(16)
        ]
        self._rng = np.random.default_rng(seed + 1)

    def pulse(self, t: float) -> float:
        """The pulse wave at ``t``: a fundamental and a weaker, shifted second harmonic."""
        if self.bpm == 0:
            return 0.0
        f = self.bpm / 60.0
        return math.sin(2 * math.pi * f * t) + 0.4 * math.sin(4 * math.pi * f * t + 1.0)

    def light(self, t: float) -> float:
        """Slow illumination drift: a 25 s swing and a ramp, far below any heart rate."""
        return 1.0 + self.drift * math.sin(2 * math.pi * t / 25.0) + 0.004 * t

    def offset(self, t: float) -> tuple[int, int]:
        """The head's sway in whole pixels, at 0.25 and 0.17 Hz (10 to 15 cycles a minute)."""
        dx = round(self.sway_px * math.sin(2 * math.pi * 0.25 * t))
        dy = round(0.5 * self.sway_px * math.sin(2 * math.pi * 0.17 * t + 1.0))
        return dx, dy

    def image(self, t: float) -> Image:
        light = np.float32(self.light(t))
        gain = (self.amplitude * self.pulse(t) / PULSE_BGR[1]) * PULSE_BGR
        head = (self.head + self.skin * gain) * light
        h, w = self.size
        canvas = np.empty((h, w, 3), np.float32)
        canvas[...] = self.background * light
        if self.away is None or not self.away[0] <= t < self.away[1]:
            dx, dy = self.offset(t)
            x, y = self.origin[0] + dx, self.origin[1] + dy
            canvas[y : y + head.shape[0], x : x + head.shape[1]] = head
        noise = self._noise[int(self._rng.integers(len(self._noise)))]
        out = np.clip(np.rint(canvas).astype(np.int16) + noise, 0, 255).astype(np.uint8)
        return np.asarray(out, dtype=np.uint8)


def steady_times(seconds: float, fps: float = 30.0) -> list[float]:
    """Frame times from 0 at a steady ``fps`` for ``seconds``."""
    return [k / fps for k in range(round(seconds * fps))]


def jittered_times(seconds: float, low_fps: float, high_fps: float, seed: int = 0) -> list[float]:
    """Frame times from 0 with each gap drawn uniformly between ``1/high_fps`` and ``1/low_fps``.

    What a browser camera over a congested link delivers: the rate wanders frame to frame.
    """
    rng = np.random.default_rng(seed)
    times, t = [], 0.0
    while t < seconds:
        times.append(t)
        t += float(rng.uniform(1.0 / high_fps, 1.0 / low_fps))
    return times


def frames(source: PulsingFace, times: list[float]) -> Iterator[Frame]:
    """Frames of ``source`` at ``times``, each carrying its own epoch-based timestamp."""
    for index, t in enumerate(times):
        yield Frame.from_array(source.image(t), index=index, meta={"timestamp": EPOCH + t})
