"""Images made by the tests themselves."""

from __future__ import annotations

import base64

import cv2
import numpy as np


def scene(width: int = 640, height: int = 480, seed: int = 0) -> np.ndarray:
    """A smooth picture (gradients and a disc): JPEG keeps it close, so changes show."""
    y, x = np.mgrid[0:height, 0:width]
    img = np.stack(
        [(x * 200 // width + seed) % 256, y * 200 // height, (x + y) * 100 // (width + height)],
        axis=2,
    ).astype(np.uint8)
    cv2.circle(img, (width // 2, height // 2), min(width, height) // 4, (200, 180, 40), -1)
    return img


def jpeg_b64(img: np.ndarray, quality: int = 90) -> str:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return base64.b64encode(buf.tobytes()).decode()


def png_b64(img: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return base64.b64encode(buf.tobytes()).decode()


def decode_b64(text: str) -> np.ndarray:
    arr = np.frombuffer(base64.b64decode(text), np.uint8)
    img = cv2.imdecode(arr, cv2.IMREAD_COLOR)
    assert img is not None
    return img
