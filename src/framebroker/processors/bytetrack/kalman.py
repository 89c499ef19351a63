"""The constant-velocity Kalman filter of SORT/DeepSORT/ByteTrack, vectorised over tracks.

State per track: ``[cx, cy, a, h]`` (centre, aspect ratio w/h, height) and their velocities.
Noise scales with the box height, with fixed tiny noise on the aspect ratio.

Why no 8x8 matrices: the initial covariance is diagonal and the motion, process noise,
measurement and measurement noise only couple a coordinate with its own velocity, so the
covariance stays block-diagonal forever: four independent 2x2 symmetric blocks
``[[p00, p01], [p01, p11]]`` per track. Predict and update then reduce to a handful of
elementwise operations on ``(N, 4)`` arrays: the same numbers as the reference's dense float64
algebra (to rounding), at a fraction of the cost.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["initiate", "predict", "update", "xyah_to_xyxy", "xyxy_to_xyah"]

F64 = NDArray[np.float64]

STD_POSITION = 1.0 / 20
STD_VELOCITY = 1.0 / 160
# Fixed standard deviations of the aspect ratio (column 2), as in the reference.
_ASPECT_INIT_POS, _ASPECT_INIT_VEL = 1e-2, 1e-5
_ASPECT_Q_POS, _ASPECT_Q_VEL = 1e-2, 1e-5
_ASPECT_R = 1e-1


def xyxy_to_xyah(xyxy: F64) -> F64:
    out = np.empty_like(xyxy)
    w = xyxy[:, 2] - xyxy[:, 0]
    h = xyxy[:, 3] - xyxy[:, 1]
    out[:, 0] = xyxy[:, 0] + w / 2
    out[:, 1] = xyxy[:, 1] + h / 2
    out[:, 2] = w / h
    out[:, 3] = h
    return out


def xyah_to_xyxy(xyah: F64) -> F64:
    out = np.empty_like(xyah)
    h = xyah[:, 3]
    w = xyah[:, 2] * h
    out[:, 0] = xyah[:, 0] - w / 2
    out[:, 1] = xyah[:, 1] - h / 2
    out[:, 2] = out[:, 0] + w
    out[:, 3] = out[:, 1] + h
    return out


def _height_scaled(h: F64, weight: float, aspect: float) -> F64:
    """Per-coordinate standard deviations: ``weight*h`` for x, y, h; ``aspect`` for a."""
    std = np.empty((h.shape[0], 4))
    wh = weight * h
    std[:, 0] = wh
    std[:, 1] = wh
    std[:, 2] = aspect
    std[:, 3] = wh
    return std


def initiate(z: F64) -> tuple[F64, F64, F64, F64, F64]:
    """Tracks from measurements ``z`` (k, 4) xyah: ``pos, vel, p00, p01, p11``."""
    h = z[:, 3]
    std_pos = _height_scaled(h, 2 * STD_POSITION, _ASPECT_INIT_POS)
    std_vel = _height_scaled(h, 10 * STD_VELOCITY, _ASPECT_INIT_VEL)
    return z.copy(), np.zeros_like(z), std_pos * std_pos, np.zeros_like(z), std_vel * std_vel


def predict(pos: F64, vel: F64, p00: F64, p01: F64, p11: F64) -> None:
    """One time step, in place. Process noise uses the height before the step."""
    h = pos[:, 3]
    q_pos = _height_scaled(h, STD_POSITION, _ASPECT_Q_POS)
    q_vel = _height_scaled(h, STD_VELOCITY, _ASPECT_Q_VEL)
    pos += vel
    p00 += 2 * p01 + p11 + q_pos * q_pos
    p01 += p11
    p11 += q_vel * q_vel


def update(
    pos: F64, vel: F64, p00: F64, p01: F64, p11: F64, z: F64
) -> tuple[F64, F64, F64, F64, F64]:
    """Correct with measurements ``z`` (k, 4) xyah; returns the new arrays."""
    r = _height_scaled(pos[:, 3], STD_POSITION, _ASPECT_R)
    s = p00 + r * r
    k0 = p00 / s
    k1 = p01 / s
    innovation = z - pos
    return (
        pos + k0 * innovation,
        vel + k1 * innovation,
        p00 - k0 * p00,
        p01 - k0 * p01,
        p11 - k1 * p01,
    )
