"""Image maths for :class:`~mock_model_2.model.MockModel2`, kept apart from the model class."""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

__all__ = ["THUMBNAIL", "motion_energy", "thumbnail"]

THUMBNAIL = (64, 48)
"""Width and height the frames are compared at: motion, not detail, is what counts."""


def thumbnail(image_bgr: NDArray[np.uint8]) -> NDArray[np.float32]:
    """``image_bgr`` as a small grey picture in [0, 1]; raises ``ValueError`` for a non-BGR one."""
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"expected a BGR image of shape (H, W, 3), got {image_bgr.shape}")
    grey = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(grey, THUMBNAIL, interpolation=cv2.INTER_AREA)
    return np.asarray(small, dtype=np.float32) / 255.0


def motion_energy(previous: NDArray[np.float32], current: NDArray[np.float32]) -> float:
    """Mean absolute change between two thumbnails, in [0, 1]: 0 for a still picture."""
    return float(np.mean(np.abs(current - previous)))
