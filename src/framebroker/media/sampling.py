"""Frame sampling for tools (``extract-frames``, the benchmarks): a file read synchronously
at a given rate on the video's own clock, from a given time, at a given size.

Frames are BGR ``uint8`` arrays of shape (height, width, 3), like every image in framebroker;
timestamps are seconds on the video's clock, 0 at the beginning of the source.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Mapping
from fractions import Fraction

import numpy as np
from av.video.frame import VideoFrame
from numpy.typing import NDArray

from .container import FALLBACK_FPS, OpenedSource, open_source
from .convert import check_size, to_bgr
from .sources import SourceError

__all__ = ["read_frames"]

Image = NDArray[np.uint8]


def read_frames(
    uri: str,
    *,
    fps: float | None = None,
    seek_s: float = 0.0,
    size: tuple[int, int] | None = None,
    realtime: bool = False,
    options: Mapping[str, str] | None = None,
    timeout: float | None = 10.0,
) -> Iterator[tuple[Image, float, int]]:
    """Frames of ``uri`` as ``(image, pts_s, index)``, read synchronously.

    - ``fps``: sample this many frames per second of video (``2.5`` allowed): for each
      instant ``seek_s + k / fps`` the frame on screen at that instant is taken, and a frame
      is never given twice (a rate above the source's gives every frame). ``None``: every
      frame.
    - ``seek_s``: start at this time; the first frame is the one on screen then.
    - ``size``: (width, height) to scale every frame to, exactly (aspect not kept).
    - ``realtime``: yield each sample no earlier than its time on the video clock, measured
      from the first one; a slow consumer delays the rest, nothing is skipped.

    ``pts_s`` is the frame's own time on the video clock (0 at the start of the video);
    ``index`` its number in the video, counted from the start, or worked out from its time
    and the average rate after a seek. Errors in opening are raised by this call, before
    the first frame is asked for. The container is closed when the generator is exhausted
    or closed (or, if it is never started, when it is garbage-collected).

    Raises :class:`SourceError` as :func:`open_source` does, and when ``seek_s`` is past the
    end of a video of known length; ``ValueError`` for a non-positive ``fps``, a negative
    ``seek_s`` or a bad ``size``.
    """
    step: Fraction | None = None
    if fps is not None:
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        step = 1 / Fraction(fps).limit_denominator(1_000_000)
    if not (math.isfinite(seek_s) and seek_s >= 0):
        raise ValueError(f"seek_s must be a non-negative number of seconds, got {seek_s!r}")
    out_size = check_size("size", size)
    start = Fraction(seek_s).limit_denominator(1_000_000)
    opened = open_source(uri, options=options, timeout=timeout)
    if opened.duration_s is not None and start >= Fraction(opened.duration_s):
        opened.close()
        raise SourceError(
            f"source {opened.spec.label!r}: cannot start at {float(start):g} s, the video is "
            f"{opened.duration_s:g} s long"
        )
    return _sample(opened, step, start, out_size, realtime)


def _frame_time(frame: VideoFrame) -> Fraction | None:
    if frame.pts is None or frame.time_base is None:
        return None
    return frame.pts * Fraction(frame.time_base)


def _sample(
    opened: OpenedSource,
    step: Fraction | None,
    start: Fraction,
    size: tuple[int, int] | None,
    realtime: bool,
) -> Iterator[tuple[Image, float, int]]:
    with opened:
        fps = Fraction(opened.fps or FALLBACK_FPS).limit_denominator(1_000_000)
        interval = 1 / fps
        origin, time_base = opened.stream.start_time, opened.stream.time_base
        base = origin * Fraction(time_base) if origin is not None and time_base else None
        seeked = start > 0
        if seeked:
            # Not seekable (a pipe, a live stream): decode from here and skip up to ``start``.
            with contextlib.suppress(SourceError):
                opened.seek(float(start))

        clock: tuple[float, float] | None = None

        def emit(frame: VideoFrame, t: Fraction, count: int) -> tuple[Image, float, int]:
            nonlocal clock
            if realtime:
                now = time.monotonic()
                if clock is None:
                    clock = (now, float(t))
                else:
                    delay = clock[0] + float(t) - clock[1] - now
                    if delay > 0:
                        time.sleep(delay)
            w, h = size or (frame.width, frame.height)
            index = round(t * fps) if seeked else count
            return to_bgr(frame, w, h), float(t), index

        target = start
        held: tuple[VideoFrame, Fraction, int] | None = None
        last_t: Fraction | None = None
        for count, frame in enumerate(opened.frames()):
            raw = _frame_time(frame)
            if base is None:
                base = raw if raw is not None else Fraction(0)
            t = (
                (last_t + interval if last_t is not None else Fraction(0))
                if raw is None
                else raw - base
            )
            last_t = t
            if t <= target:
                held = (frame, t, count)  # on screen at ``target``, unless a later one is
                continue
            if held is not None:
                yield emit(*held)
                target = _next_target(target, step, t)
                held = (frame, t, count)
                continue
            # No frame is on screen at ``target`` (the video starts later): the first one after
            # it stands in, and the instants it covers are passed over.
            yield emit(frame, t, count)
            target = _next_target(target, step, t, inclusive=True)
        if held is not None:
            frame, t, count = held
            if step is None or target < t + interval:
                yield emit(frame, t, count)


def _next_target(
    target: Fraction, step: Fraction | None, t: Fraction, *, inclusive: bool = False
) -> Fraction:
    """The next sampling instant once the frame before the one at time ``t`` was given.

    That frame stays on screen until ``t``, so instants before ``t`` would pick it again and
    are passed over; ``inclusive`` passes over ``t`` too (the frame at ``t`` was given).
    """
    if step is None:
        return t
    while target < t or (inclusive and target == t):
        target += step
    return target
