"""A decoded video frame (PyAV) as a :class:`~framebroker.core.ImageSource`.

A WebRTC track hands over ``av.VideoFrame`` objects in YUV. Converting one to BGR is work
(see :mod:`.convert`) that a live server should do only when a model reads the pixels, once
however many models read them, and never on the event loop: the conversion happens on the
first :meth:`VideoFrameImage.decode`, which processors call from worker threads, under a
lock, and the result is kept.
"""

from __future__ import annotations

import threading

import av
import numpy as np
from numpy.typing import NDArray

from .convert import to_bgr

__all__ = ["VideoFrameImage"]

Image = NDArray[np.uint8]


class VideoFrameImage:
    """``frame`` converted to a BGR array on first use, shared by every reader.

    The array is read-only: several models of one session read the same pixels at the same
    time, so one that wrote to them would corrupt the others' input. A model that needs to
    draw must copy first.
    """

    __slots__ = ("_array", "_frame", "_height", "_lock", "_width")

    def __init__(self, frame: av.VideoFrame) -> None:
        self._frame: av.VideoFrame | None = frame
        self._width = int(frame.width)
        self._height = int(frame.height)
        self._array: Image | None = None
        self._lock = threading.Lock()

    @property
    def width(self) -> int:
        return self._width

    @property
    def height(self) -> int:
        return self._height

    @property
    def decoded(self) -> bool:
        """Whether the pixels were converted (some reader asked for them)."""
        return self._array is not None

    def decode(self) -> Image:
        with self._lock:
            if self._array is None:
                frame = self._frame
                assert frame is not None  # dropped only once the array exists
                array = to_bgr(frame)
                array.flags.writeable = False
                self._array = array
                self._frame = None  # the YUV planes are no longer needed
            return self._array
