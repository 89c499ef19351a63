"""The reader thread: a video file, network stream or camera read in its own daemon thread,
each frame handed to a callback.

:class:`VideoSource` is what feeds a session from ``serve --source``. It paces frames at the
source's frame rate when asked, loops files and reconnects to cameras and network streams
with exponential backoff (:mod:`.pacing`). It never decodes more than one frame ahead of the
callback, so memory stays flat however slow the consumer is; the consumer keeps the newest
frame (the ``latest`` policy) and drops the rest.

Frames are BGR ``uint8`` arrays of shape (height, width, 3), like every image in framebroker.
Timestamps are seconds on the video's clock, starting at 0 at the beginning of the source.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

import av
import numpy as np
from numpy.typing import NDArray

from .container import OpenedSource, ffmpeg_reason, open_source
from .convert import check_size, to_bgr
from .pacing import Backoff, Pacer, Timeline
from .sources import SourceError, parse_source

__all__ = ["FrameCallback", "VideoSource"]

logger = logging.getLogger(__name__)

Image = NDArray[np.uint8]
FrameCallback = Callable[[Image, float, int], None]
"""``on_frame(image, pts_s, index)``: called from the reader thread for each delivered frame."""


def _fit(width: int, height: int, bound: tuple[int, int] | None) -> tuple[int, int]:
    if bound is None:
        return width, height
    scale = min(bound[0] / width, bound[1] / height)
    if scale >= 1:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


class VideoSource:
    """A video file, network stream or camera read in its own daemon thread.

    Each decoded frame goes to ``on_frame(image, pts_s, index)`` in the reader thread, as a
    new BGR array: ``pts_s`` is the frame's time in seconds on the source's clock, always
    increasing (also across loops and reconnects); ``index`` counts the frames read from the
    source, so skipped frames show as gaps. The reader waits for ``on_frame`` to return
    before decoding the next frame and holds no queue: a consumer wanting only the newest
    frame keeps the last one it was given.

    - ``realtime``: hold each frame until its time comes, at the source's rate; frames that
      are already late are skipped (counted in :attr:`frames_dropped`) so a slow consumer
      stays on the source's clock instead of drifting. ``None`` means on for files and
      network videos of known length, off for cameras and live streams (they come at their
      own pace). Off for a file: as fast as ``on_frame`` returns.
    - ``loop``: start a file over when it ends; ``pts_s`` keeps counting up.
    - ``reconnect``: when a network stream or camera cannot be opened, fails, or ends,
      try again after ``backoff_base`` seconds, doubling to ``backoff_cap``; the delay goes
      back to ``backoff_base`` once a frame is decoded. Each attempt is logged. Files never
      reconnect: their errors are final.
    - ``max_size``: (width, height) bound; larger frames are scaled down, keeping their
      aspect ratio. Smaller frames are left as they are.
    - ``on_end(error)``: called once from the reader thread when it finishes, with ``None``
      for a clean end (the file ended, or :meth:`stop`) or the error that ended it.
    - ``options`` and ``timeout``: as for :func:`open_source`.

    An exception from ``on_frame`` stops the source; it is logged and kept in
    :attr:`last_error`.
    """

    def __init__(
        self,
        uri: str,
        on_frame: FrameCallback,
        *,
        realtime: bool | None = None,
        loop: bool = False,
        reconnect: bool = True,
        max_size: tuple[int, int] | None = None,
        on_end: Callable[[BaseException | None], None] | None = None,
        options: Mapping[str, str] | None = None,
        timeout: float | None = 10.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
    ) -> None:
        self.spec = parse_source(uri, options=options)
        self._on_frame = on_frame
        self._on_end = on_end
        self._realtime = realtime
        self.loop = loop
        self.reconnect = reconnect
        self.max_size = check_size("max_size", max_size)
        self._timeout = timeout
        self._backoff = Backoff(backoff_base, backoff_cap)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._fps: float | None = None
        self._width: int | None = None
        self._height: int | None = None
        self._live: bool | None = None
        self._connected = False
        self._frames_read = 0
        self._frames_delivered = 0
        self._frames_dropped = 0
        self._reconnects = 0
        self._last_error: BaseException | None = None
        self._failed = False
        self._opened: OpenedSource | None = None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"VideoSource({self.spec.label!r}, {state}, {self._frames_read} frames read)"

    @property
    def name(self) -> str:
        """The source as given, with any password masked."""
        return self.spec.label

    @property
    def fps(self) -> float | None:
        """The stream's average frame rate, once opened; ``None`` before or if unknown."""
        return self._fps

    @property
    def width(self) -> int | None:
        """Width of the frames delivered (after ``max_size``); ``None`` before the first."""
        return self._width

    @property
    def height(self) -> int | None:
        """Height of the frames delivered (after ``max_size``); ``None`` before the first."""
        return self._height

    @property
    def realtime(self) -> bool | None:
        """Whether frames are paced; ``None`` until the source is opened and the default is
        resolved."""
        if self._realtime is not None:
            return self._realtime
        return None if self._live is None else not self._live

    @property
    def live(self) -> bool | None:
        """True for cameras and live streams, False for files; ``None`` until opened."""
        return self._live

    @property
    def frames_read(self) -> int:
        """Frames decoded from the source so far."""
        return self._frames_read

    @property
    def frames_delivered(self) -> int:
        """Frames handed to ``on_frame`` so far."""
        return self._frames_delivered

    @property
    def frames_dropped(self) -> int:
        """Frames decoded but skipped by realtime pacing because they were already late."""
        return self._frames_dropped

    @property
    def reconnects(self) -> int:
        """Reconnection attempts scheduled so far (each one logged)."""
        return self._reconnects

    @property
    def running(self) -> bool:
        """True from :meth:`start` until the reader thread has finished."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def connected(self) -> bool:
        """True while the source is open (false while waiting to reconnect)."""
        return self._connected

    @property
    def last_error(self) -> BaseException | None:
        """The most recent failure, kept after a successful reconnect; ``None`` if none."""
        return self._last_error

    def start(self) -> None:
        """Start reading. A file is opened here, so its errors are raised to the caller.

        Network streams and cameras are opened in the reader thread (connecting may take a
        while, and may be retried); their failures go to :attr:`last_error`, the log and
        ``on_end``. Raises :class:`SourceError` for a file that cannot be used and
        ``RuntimeError`` if the source was already started.
        """
        with self._start_lock:
            if self._thread is not None or self._stop.is_set():
                raise RuntimeError(f"video source {self.name!r} was already started or stopped")
            if self.spec.kind == "file":
                self._opened = self._open()
            self._thread = threading.Thread(
                target=self._run, name=f"video:{self.name}", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float | None = 5.0) -> bool:
        """Stop reading and wait up to ``timeout`` seconds for the thread to end.

        Returns whether it ended. Safe to call more than once, before :meth:`start`, and
        from ``on_frame`` itself (then it does not wait). A pacing sleep or a reconnection
        delay is cut short at once; a network read in progress can take up to the source's
        ``timeout`` to give up.
        """
        self._stop.set()
        with self._start_lock:  # a start() in progress has made its thread by then
            thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the reader to finish by itself (a file that ended); True if it did."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _open(self) -> OpenedSource:
        opened = open_source(self.spec.uri, options=self.spec.options, timeout=self._timeout)
        self._fps = opened.fps
        self._live = opened.live
        return opened

    def _run(self) -> None:
        timeline = Timeline()
        pacer = Pacer(self._stop)
        try:
            while not self._stop.is_set():
                try:
                    if self._opened is None:
                        self._opened = self._open()
                        if self._reconnects:
                            logger.info("video source %s: connected again", self.name)
                    self._connected = True
                    pacer.reset()
                    self._read(timeline, pacer)
                    return
                except (SourceError, av.FFmpegError, OSError) as exc:
                    error = (
                        exc
                        if isinstance(exc, SourceError)
                        else SourceError(f"source {self.name!r}: {ffmpeg_reason(exc)}")
                    )
                    if not self._retry(error):
                        return
                finally:
                    self._connected = False
                    if self._opened is not None:
                        self._opened.close()
                        self._opened = None
        except Exception as exc:
            self._fail(exc)
            logger.exception("video source %s: reader failed", self.name)
        finally:
            if self._on_end is not None:
                try:
                    self._on_end(self._last_error if self._failed else None)
                except Exception:
                    logger.exception("video source %s: on_end raised", self.name)

    def _fail(self, error: BaseException) -> None:
        self._last_error = error
        self._failed = True

    def _retry(self, error: SourceError) -> bool:
        """Record ``error``; wait out the backoff if this source reconnects. False: give up."""
        self._last_error = error
        if self.spec.kind == "file" or not self.reconnect:
            self._fail(error)
            logger.error("%s", error.message)
            return False
        delay = self._backoff.next_delay()
        self._reconnects += 1
        logger.warning("%s; reconnecting in %.2f s", error.message, delay)
        return not self._stop.wait(delay)

    def _read(self, timeline: Timeline, pacer: Pacer) -> None:
        """Deliver frames from ``self._opened`` until it is over for good or stopped.

        Raises :class:`SourceError` (or PyAV's errors) when reading fails, and when a live
        source ends, since for a camera or a stream the end is a drop to reconnect after.
        """
        opened = self._opened
        assert opened is not None
        realtime = self._realtime if self._realtime is not None else not opened.live
        interval = opened.interval
        timeline.new_segment(None if opened.live else opened.start_s)
        sizes = ((0, 0), (0, 0))  # (decoded size, delivered size) of the last frame
        while True:
            read_before = self._frames_read
            for frame in opened.frames():
                if self._stop.is_set():
                    return
                self._backoff.reset()
                index = self._frames_read
                self._frames_read += 1
                pts = timeline.stamp(frame.time, interval)
                if realtime and not pacer.admit(pts, interval):
                    self._frames_dropped += 1
                    continue
                if self._stop.is_set():
                    return
                if sizes[0] != (frame.width, frame.height):
                    size = (frame.width, frame.height)
                    sizes = (size, _fit(*size, self.max_size))
                self._width, self._height = sizes[1]
                if not self._deliver(to_bgr(frame, *sizes[1]), pts, index):
                    return
            if self._stop.is_set():
                return
            if opened.live:
                raise SourceError(f"source {self.name!r}: the stream ended")
            if not self.loop:
                return
            if self._frames_read == read_before:
                raise SourceError(f"source {self.name!r}: no frames to loop over")
            try:
                opened.rewind()
            except SourceError:
                # Some inputs cannot seek (a file on a pipe, HTTP without ranges): reopen.
                opened.close()
                self._opened = None
                self._opened = opened = self._open()
            timeline.new_segment(opened.start_s)

    def _deliver(self, image: Image, pts: float, index: int) -> bool:
        try:
            self._on_frame(image, pts, index)
        except Exception as exc:
            self._fail(exc)
            logger.exception("video source %s: on_frame raised; stopping", self.name)
            self._stop.set()
            return False
        self._frames_delivered += 1
        return True
