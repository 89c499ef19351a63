"""Test videos whose frames say which frame they are, and a reader for that."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from numpy.typing import NDArray

W, H = 320, 240
BITS = 8
# The bottom half shows these BGR colours left to right, so a swapped channel order shows.
SWATCHES = ((255, 0, 0), (0, 255, 0), (0, 0, 255))


def picture(i: int) -> NDArray[np.uint8]:
    """Frame ``i``: its number in binary as black/white stripes across the top half, and
    blue, green and red blocks across the bottom half (BGR order)."""
    image = np.zeros((H, W, 3), np.uint8)
    step = W // BITS
    for bit in range(BITS):
        if i >> bit & 1:
            image[: H // 2, bit * step : (bit + 1) * step] = 255
    third = W // 3
    for k, colour in enumerate(SWATCHES):
        image[H // 2 :, k * third : (k + 1) * third] = colour
    return image


def index_of(image: NDArray[np.uint8]) -> int:
    """The frame number :func:`picture` drew, read back from an image of any size."""
    h, w = image.shape[:2]
    step = w / BITS
    row = image[h // 8 : 3 * h // 8]
    bits = [
        row[:, round((b + 0.25) * step) : round((b + 0.75) * step)].mean() > 128
        for b in range(BITS)
    ]
    return sum(1 << b for b, on in enumerate(bits) if on)


def swatches(image: NDArray[np.uint8]) -> list[tuple[int, int, int]]:
    """The mean colour in the middle of each bottom block, as (b, g, r)."""
    h, w = image.shape[:2]
    third = w / 3
    out = []
    for k in range(3):
        block = image[
            5 * h // 8 : 7 * h // 8, round((k + 0.25) * third) : round((k + 0.75) * third)
        ]
        b, g, r = block.reshape(-1, 3).mean(axis=0)
        out.append((round(b), round(g), round(r)))
    return out


def write_clip(
    path: Path, *, seconds: int = 3, fps: int = 10, creation_time: str | None = None
) -> Path:
    """An MPEG-4 clip of ``seconds * fps`` frames drawn by :func:`picture`."""
    with av.open(str(path), "w") as out:
        if creation_time is not None:
            out.metadata["creation_time"] = creation_time
        stream = out.add_stream("mpeg4", rate=fps)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height = W, H
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 4_000_000
        for i in range(seconds * fps):
            frame = av.VideoFrame.from_ndarray(picture(i), format="bgr24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path
