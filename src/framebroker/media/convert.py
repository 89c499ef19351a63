"""Pixel-format conversion of decoded video frames, with one swscale context per thread.

``VideoFrame.to_ndarray(format=...)`` and ``VideoFrame.reformat`` build a new swscale context
for every frame they convert, and the FFmpeg in PyAV 18's wheels gives each new context its
own pool of threads, one per core, started and joined around that single frame. Measured on
vtest's 640x480 H.264 frames on 2 cores: 0.9 ms of the calling thread's CPU per frame plus
two threads created and destroyed, against 0.14 ms for the same pixels, bit for bit, with a
context kept per thread and run on that thread alone. In the people counter that pool was
the main cost of reading the video (libavcodec and the kernel's thread churn, about 8% of the
server's CPU, for a decode that costs 2%).

The context is kept per thread because a swscale context must not be used by two threads at
once; each long-lived thread (a source's reader, a worker of the pool) keeps its own, rebuilt
only when the sizes or formats it is asked for change.
"""

from __future__ import annotations

import threading

import numpy as np
from av.video.frame import VideoFrame
from av.video.reformatter import VideoReformatter
from numpy.typing import NDArray

__all__ = ["check_size", "reformat", "to_bgr"]

_local = threading.local()


def _reformatter() -> VideoReformatter:
    reformatter: VideoReformatter | None = getattr(_local, "reformatter", None)
    if reformatter is None:
        reformatter = _local.reformatter = VideoReformatter()
    return reformatter


def reformat(
    frame: VideoFrame,
    *,
    width: int | None = None,
    height: int | None = None,
    format: str | None = None,
    interpolation: str | None = None,
) -> VideoFrame:
    """``frame.reformat(...)`` on this thread's context, on this thread only.

    Returns ``frame`` itself when nothing needs converting.
    """
    return _reformatter().reformat(
        frame,
        width=width,
        height=height,
        format=format,
        interpolation=interpolation,
        threads=1,
    )


def to_bgr(
    frame: VideoFrame, width: int | None = None, height: int | None = None
) -> NDArray[np.uint8]:
    """The frame as a C-contiguous BGR ``uint8`` array, scaled to ``width`` x ``height`` if
    given. One swscale pass converts and scales; shrinking uses "AREA", which averages, so
    it does not alias."""
    w = frame.width if width is None else width
    h = frame.height if height is None else height
    scaled = (w, h) != (frame.width, frame.height)
    out = reformat(
        frame, width=w, height=h, format="bgr24", interpolation="AREA" if scaled else None
    )
    return np.ascontiguousarray(out.to_ndarray(), dtype=np.uint8)


def check_size(name: str, size: tuple[int, int] | None) -> tuple[int, int] | None:
    """``size``, a (width, height) to convert frames to, checked; ``name`` is the argument's,
    for the message. Raises ``ValueError`` unless both are positive integers."""
    if size is None:
        return None
    if len(size) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size
    ):
        raise ValueError(f"{name} must be (width, height) in positive integers, got {size!r}")
    return int(size[0]), int(size[1])
