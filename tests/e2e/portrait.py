"""A clip of a face the people counter saves, made from the test data's portrait."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np

from ..processors.rppg_video import MEDIA

PORTRAIT = MEDIA / "astronaut.png"


def write_portrait_clip(path: Path, frames: int = 20, fps: int = 5) -> None:
    """A person facing the camera, drifting sideways: the people counter saves the face."""
    image = cv2.imread(str(PORTRAIT), cv2.IMREAD_COLOR)
    assert image is not None, f"test data missing or unreadable: {PORTRAIT}"
    portrait = cv2.resize(image, (400, 400))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        for k in range(frames):
            canvas = np.full((480, 640, 3), 90, np.uint8)
            x = 60 + 4 * k
            canvas[80:480, x : x + 400] = portrait
            for packet in stream.encode(av.VideoFrame.from_ndarray(canvas, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
