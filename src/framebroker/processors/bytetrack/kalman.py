"""The constant-velocity Kalman filter of SORT/DeepSORT/ByteTrack: constants and box forms.

State per track: ``[cx, cy, a, h]`` (centre, aspect ratio w/h, height) and their velocities.
Noise scales with the box height, with fixed tiny noise on the aspect ratio.

Why the kernel keeps no 8x8 matrices: the initial covariance is diagonal and the motion,
process noise, measurement and measurement noise only couple a coordinate with its own
velocity, so the covariance stays block-diagonal forever: four independent 2x2 symmetric blocks
``[[p00, p01], [p01, p11]]`` per track. With ``F = [[1, 1], [0, 1]]`` and ``H = [1, 0]``:

- predict: ``pos += vel``, ``p00 += 2 p01 + p11 + q_pos²``, ``p01 += p11``,
  ``p11 += q_vel²`` (``q`` from the height before the step);
- update: ``s = p00 + r²``, ``k = (p00, p01) / s``, ``pos += k0 (z - pos)``,
  ``vel += k1 (z - pos)``, ``p00 -= k0 p00``, ``p01 -= k0 p01``, ``p11 -= k1 p01``.

These are the same numbers as the reference's dense float64 algebra, to rounding.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["STD_POSITION", "STD_VELOCITY", "xyah_to_xyxy"]

STD_POSITION = 1.0 / 20
STD_VELOCITY = 1.0 / 160


def xyah_to_xyxy(xyah: NDArray[np.float64]) -> NDArray[np.float64]:
    """Boxes as the reference reports them: top-left from the centre, then plus the size."""
    out = np.empty_like(xyah)
    h = xyah[:, 3]
    w = xyah[:, 2] * h
    out[:, 0] = xyah[:, 0] - w / 2
    out[:, 1] = xyah[:, 1] - h / 2
    out[:, 2] = out[:, 0] + w
    out[:, 3] = out[:, 1] + h
    return out
