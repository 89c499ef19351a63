"""Small videos whose frames show their own number, made by the tests of the video modules
(``media/sources.py`` ... ``media/sampling.py``), and the shared sample they read when present."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

MEDIA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "media"
VTEST = MEDIA / "vtest.avi"
needs_vtest = pytest.mark.skipif(
    not VTEST.is_file(),
    reason=f"{VTEST} is absent (see shared/data/media/README.md to get it)",
)

W, H = 64, 48


def picture(i: int) -> np.ndarray:
    """Frame ``i``: its number in binary, as eight black or white stripes (survives lossy
    coding); :func:`index_of` reads it back."""
    image = np.zeros((H, W, 3), np.uint8)
    for bit in range(8):
        if i >> bit & 1:
            image[:, bit * 8 : bit * 8 + 8] = 255
    return image


def index_of(image: np.ndarray) -> int:
    step = image.shape[1] // 8
    bits = [
        image[:, b * step + step // 4 : (b + 1) * step - step // 4].mean() > 128 for b in range(8)
    ]
    return sum(1 << b for b, on in enumerate(bits) if on)


def encode_video(
    target: str | io.BytesIO,
    *,
    frames: int,
    fps: int,
    codec: str = "mpeg4",
    format: str | None = None,
) -> None:
    """A ``W``x``H`` video whose frames show their own number (see :func:`picture`)."""
    with av.open(target, "w", format=format) as out:
        stream = out.add_stream(codec, rate=fps)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height = W, H
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(picture(i), format="bgr24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
