"""Frames gathered into video windows, each encoded to an MP4 as its frames arrive.

Video analysis streams are sessions like any other: their frames queue in the session's
lane, in order, under the one scheduler and its watchdog, and this processor keeps the open
window (see :class:`~framebroker.media.video_windows.WindowWriter` for when one closes). It
answers each frame with where it went and what it looked like, plus every window the frame
closed; whoever owns the stream sends those windows on for analysis.

A frame without an image whose ``meta`` holds :data:`CLOSE` closes the open window on
purpose: ``{"close": "seconds", "window": 3}`` closes window 3 if it is still the open one
(a timer that fired late must not close the next window), ``{"close": "end"}`` whatever is
open. Ending the session drops the open window unencoded: nobody is left to receive it.

Its snapshot is the stream's numbering alone (frames and windows numbered so far), not the
open window: a stream resumed from it (its node died) numbers its next frame and its next
window on from there, and the frames of the window that was open at the snapshot are lost.
Keeping them would make every snapshot as big as a window (a raw frame of 640x480 is
900 KB, an encoded window up to ``max_bytes``), written every second or so for each stream,
to save at most one window's frames, which the client was told had arrived but never
answered for.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, cast

from ..core.frame import Frame
from ..core.processor import ProcessContext, Processor
from ..media.encode import EncoderOptions
from ..media.video_windows import ClosedBy, ClosedWindow, WindowWriter

__all__ = ["CLOSE", "VideoWindow"]

CLOSE = "close"
"""The ``meta`` key of a frame that closes the open window instead of adding to it."""

_CLOSERS: frozenset[str] = frozenset({"seconds", "end"})


class VideoWindow(Processor):
    """Keeps one stream's open window; see the module docstring.

    ``keep_frames``: keep the decoded frames beside each window's MP4 (in-process pipelines
    analyse them). Raises ``ValueError`` for a bound below 1 or bad encoder settings.
    """

    name = "video_window"
    needs_image = True
    config_only: ClassVar[frozenset[str]] = frozenset(
        {"window_frames", "max_bytes", "fps", "preset", "crf", "keep_frames"}
    )

    def __init__(
        self,
        window_frames: int = 30,
        *,
        max_bytes: int = 64 * 1024 * 1024,
        fps: float = 30.0,
        preset: str = "ultrafast",
        crf: int = 23,
        keep_frames: bool = False,
    ) -> None:
        self.writer = WindowWriter(
            window_frames,
            max_bytes=max_bytes,
            options=EncoderOptions(fps=fps, preset=preset, crf=crf),
            keep_frames=keep_frames,
        )

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any]:
        writer = self.writer
        now = time.time()
        close = frame.meta.get(CLOSE)
        if close is not None:
            if close not in _CLOSERS:
                raise ValueError(f"{CLOSE}: expected one of {sorted(_CLOSERS)}, got {close!r}")
            wanted = frame.meta.get("window")
            closed: list[ClosedWindow] = []
            if wanted is None or wanted == writer.open_index:
                done = writer.close(cast(ClosedBy, close), now)
                if done is not None:
                    closed.append(done)
            return {"closed": closed, "open": self._open()}
        image = frame.image
        number = writer.frames_added
        window, closed = writer.add(image, now)
        b, g, r = (int(v) for v in image[0, 0])
        return {
            "frame": number,
            "window": window,
            "first_pixel": [r, g, b],
            "size": [int(image.shape[1]), int(image.shape[0])],
            "closed": closed,
            "open": self._open(),
        }

    def _open(self) -> dict[str, Any] | None:
        writer = self.writer
        if writer.open_index is None:
            return None
        return {"window": writer.open_index, "since": writer.open_since}

    def snapshot(self) -> dict[str, Any]:
        """The numbering: ``{"frames": next frame's number, "windows": next window's index}``
        (the open window, if any, counts as used: its index is never given again)."""
        return {"frames": self.writer.frames_added, "windows": self.writer.windows_opened}

    def restore(self, state: dict[str, Any]) -> None:
        """Number on from :meth:`snapshot`'s output; raises ``ValueError`` for a state of
        another shape, or once frames were added here."""
        try:
            frames, windows = state["frames"], state["windows"]
        except (KeyError, TypeError):
            raise ValueError(
                f"{self.name}: expected a snapshot with 'frames' and 'windows', got {state!r:.200}"
            ) from None
        self.writer.number_from(frames, windows)

    def end(self, ctx: ProcessContext) -> dict[str, Any]:
        self.writer.abandon()
        return {"frames": self.writer.frames_added, "windows": self.writer.windows_opened}
