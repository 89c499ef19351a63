"""Pictures in and out of the clients: a BGR array becomes JPEG bytes to send, JPEG bytes
that come back become a BGR array. OpenCV is imported only when an array has to be
encoded or decoded, so a client that sends encoded images never loads it."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["Image", "decode_image", "encode_image"]

Image = NDArray[np.uint8] | bytes | bytearray | memoryview
"""A BGR ``uint8`` array of shape (H, W, 3), or an already encoded JPEG or PNG."""

_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")


def encode_image(image: Image, *, quality: int = 90) -> bytes:
    """JPEG or PNG bytes for ``image``: encoded bytes are checked and passed through, an
    array is encoded as JPEG at ``quality``. Raises ``ValueError`` for anything else."""
    if isinstance(image, bytes | bytearray | memoryview):
        data = bytes(image)
        if not data.startswith(_SIGNATURES):
            raise ValueError("image bytes must be a JPEG or a PNG (or pass a BGR array)")
        return data
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3 or not array.size:
        raise ValueError(
            f"image must be a BGR uint8 array of shape (H, W, 3), got {array.dtype} {array.shape}"
        )
    cv2: Any = _opencv()
    ok, encoded = cv2.imencode(".jpg", array, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("OpenCV could not encode the image as JPEG")
    return bytes(encoded)


def decode_image(data: bytes) -> NDArray[np.uint8]:
    """A JPEG or PNG as a BGR ``uint8`` array; ``ValueError`` when it is neither."""
    cv2: Any = _opencv()
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("the image bytes are not a JPEG or PNG OpenCV can decode")
    return np.asarray(image, dtype=np.uint8)


def _opencv() -> Any:
    try:
        import cv2
    except ImportError:  # pragma: no cover - opencv is installed with framebroker
        raise ImportError(
            "encoding and decoding arrays needs OpenCV: pip install opencv-python-headless"
        ) from None
    return cv2
