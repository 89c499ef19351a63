"""Cutting one stream of frames into windows, each encoded to an MP4 as its frames arrive.

A window closes when it holds ``window_frames`` frames (``"frames"``), when a frame of another
size arrives (``"size"``: the old window closes as it is and the new frame opens the next
one; a video cannot change size, and re-scaling would hand the services pictures the client
never sent), when adding a frame would take it past ``max_bytes`` (``"bytes"``), or when
its owner closes it (``"seconds"`` for a timed window, ``"end"``).

Synchronous and not thread-safe: the async layer calls it from one worker thread at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from .encode import EncoderOptions, Mp4Encoder

__all__ = ["ClosedBy", "ClosedWindow", "WindowWriter"]

Image = NDArray[np.uint8]
ClosedBy = Literal["frames", "size", "bytes", "seconds", "end"]


@dataclass(slots=True)
class ClosedWindow:
    """A finished window: its MP4, and its decoded frames when they were kept."""

    index: int
    video: bytes
    count: int
    size: tuple[int, int]
    first_frame: int
    opened_at: float
    closed_at: float
    closed_by: ClosedBy
    frames: list[Image] = field(default_factory=list)


@dataclass(slots=True)
class _Open:
    index: int
    encoder: Mp4Encoder
    first_frame: int
    opened_at: float
    last_at: float
    frames: list[Image] = field(default_factory=list)
    frame_bytes: int = 0

    @property
    def nbytes(self) -> int:
        return self.encoder.nbytes + self.frame_bytes


class WindowWriter:
    """The open window of one stream; see the module docstring for when windows close.

    ``keep_frames`` keeps the decoded frames beside the video (in-process pipelines need
    them); they count towards ``max_bytes``. A window always takes at least one frame, so a
    single frame over ``max_bytes`` makes a window of its own.
    """

    def __init__(
        self,
        window_frames: int,
        *,
        max_bytes: int,
        options: EncoderOptions | None = None,
        keep_frames: bool = False,
    ) -> None:
        if window_frames < 1:
            raise ValueError(f"window_frames must be >= 1, got {window_frames}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.window_frames = window_frames
        self.max_bytes = max_bytes
        self.options = options or EncoderOptions()
        self.keep_frames = keep_frames
        self.frames_added = 0
        self.windows_opened = 0
        self._open: _Open | None = None

    @property
    def open_index(self) -> int | None:
        """Index of the open window, ``None`` when none is open."""
        return None if self._open is None else self._open.index

    @property
    def open_since(self) -> float | None:
        """When the open window's first frame arrived."""
        return None if self._open is None else self._open.opened_at

    @property
    def open_frames(self) -> int:
        return 0 if self._open is None else self._open.encoder.frames

    @property
    def open_bytes(self) -> int:
        return 0 if self._open is None else self._open.nbytes

    def add(self, image: Image, at: float) -> tuple[int, list[ClosedWindow]]:
        """Append ``image`` (BGR, arrived at ``at``); returns its window's index and the
        windows this closed (0, 1 or 2, oldest first)."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"expected a uint8 BGR frame (H, W, 3), got {image.dtype} {image.shape}"
            )
        closed: list[ClosedWindow] = []
        height, width = image.shape[:2]
        current = self._open
        if current is not None:
            if current.encoder.source_size != (width, height):
                closed.append(self._finish("size", at))
            elif current.nbytes + self._cost(image) > self.max_bytes:
                closed.append(self._finish("bytes", at))
        if self._open is None:
            self._open = _Open(
                index=self.windows_opened,
                encoder=Mp4Encoder(width, height, self.options),
                first_frame=self.frames_added,
                opened_at=at,
                last_at=at,
            )
            self.windows_opened += 1
        window = self._open
        window.encoder.add(image)
        window.last_at = at
        if self.keep_frames:
            window.frames.append(image)
            window.frame_bytes += image.nbytes
        self.frames_added += 1
        index = window.index
        if window.encoder.frames >= self.window_frames:
            closed.append(self._finish("frames", at))
        return index, closed

    def number_from(self, frames_added: int, windows_opened: int) -> None:
        """Carry on another writer's numbering (a stream resumed from its counters): the next
        frame is number ``frames_added``, the next window ``windows_opened``. Only before any
        frame is added here; raises ``ValueError`` otherwise, or for a negative count."""
        if self._open is not None or self.frames_added or self.windows_opened:
            raise ValueError("a writer can take over numbering only before its first frame")
        for name, value in (("frames_added", frames_added), ("windows_opened", windows_opened)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        self.frames_added = frames_added
        self.windows_opened = windows_opened

    def _cost(self, image: Image) -> int:
        return image.nbytes if self.keep_frames else 0

    def close(self, closed_by: ClosedBy, at: float) -> ClosedWindow | None:
        """Close the open window now, if there is one."""
        return None if self._open is None else self._finish(closed_by, at)

    def abandon(self) -> None:
        """Drop the open window, unencoded (its client is gone)."""
        if self._open is not None:
            window, self._open = self._open, None
            window.encoder.close()

    def _finish(self, closed_by: ClosedBy, at: float) -> ClosedWindow:
        window = self._open
        assert window is not None
        self._open = None
        try:
            video = window.encoder.finish()
        finally:
            window.encoder.close()
        return ClosedWindow(
            index=window.index,
            video=video,
            count=window.encoder.frames,
            size=window.encoder.source_size,
            first_frame=window.first_frame,
            opened_at=window.opened_at,
            closed_at=at,
            closed_by=closed_by,
            frames=window.frames,
        )
