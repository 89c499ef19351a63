"""Video sources the server reads itself (``serve --source``): each feeds one session.

A source's frames go into its session under the ``latest`` policy, so a pipeline slower than
the camera drops stale frames (counted) instead of falling behind. A file read as fast as the
pipeline goes (``--no-source-realtime``) is the exception: it waits for the pipeline, and its
frames go in under ``wait``, so none is decoded only to be dropped. The session runs the
people counter; a :class:`~framebroker.people.live.LiveFeed` publishes and persists what it
produces. A restart in the middle of the day resumes the day's counts from the store; an event
that a crash left running is closed first (see
:func:`~framebroker.people.live.end_interrupted_events`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import threading
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from ..core.frame import RawImage
from ..core.inbox import Backpressure
from ..core.manager import ProcessorSpec
from ..errors import SessionNotFound
from ..media.reader import VideoSource
from ..media.sources import parse_source
from ..sessions import FrameIn, SessionInfo, Sessions
from .config import LiveSettings, PeopleCounterSettings
from .live import LiveFeed, Offload, end_interrupted_events, local_day
from .records import FaceCrops, PeopleRecords

__all__ = ["SourceFeed", "parse_source_arg", "people_pipeline"]

log = logging.getLogger(__name__)

FAILURE_LOG_INTERVAL_S = 10.0
"""At most one warning line per source this often about frames that failed."""

_NAME_RE = re.compile(r"[^A-Za-z0-9._~-]+")


def parse_source_arg(arg: str, index: int) -> tuple[str, str]:
    """``NAME=URI`` or a bare URI (named after the file, or ``cam<index>``)."""
    name, sep, uri = arg.partition("=")
    if sep and _NAME_RE.sub("", name) == name and "://" not in name and name:
        return name, uri
    uri = arg
    stem = Path(uri.split("?", 1)[0]).stem if "://" not in uri else ""
    clean = _NAME_RE.sub("-", stem).strip("-")[:64]
    return (clean or f"cam{index}"), uri


def people_pipeline(
    config: PeopleCounterSettings,
    *,
    jpeg_quality: int = 70,
    day: str,
    counts: dict[str, dict[str, int]] | None = None,
    events_today: int = 0,
) -> list[ProcessorSpec]:
    """Detect, track, count, watch traffic, keep faces, draw: resuming today's totals."""
    specs: list[ProcessorSpec] = [
        {"name": "detect", "model": config.detector, "ends_stage": True},
        "bytetrack",
        {
            "name": "line_counter",
            "lines": config.lines,
            "min_frames": config.min_frames,
            "timezone": config.timezone,
            "initial": {"day": day, "lines": counts} if counts else None,
        },
        {
            "name": "traffic_events",
            "window_s": config.event_window_s,
            "threshold": config.event_threshold,
            "cooldown_s": config.event_cooldown_s,
            "timezone": config.timezone,
            "initial": {"day": day, "daily_event_count": events_today},
        },
    ]
    if config.faces:
        specs.append({"name": "faces"})
    specs.append({"name": "annotate", "quality": jpeg_quality})
    return specs


class SourceFeed:
    """One source, its session and its live feed; started and stopped on the event loop."""

    def __init__(
        self,
        name: str,
        uri: str,
        sessions: Sessions,
        offload: Offload,
        records: PeopleRecords | None,
        counter: PeopleCounterSettings,
        live: LiveSettings,
        *,
        crops: FaceCrops | None = None,
        realtime: bool | None = None,
        loop: bool = False,
    ) -> None:
        self.name = name
        self.uri = uri
        self.sessions = sessions
        self._offload = offload
        self.records = records
        self.counter = counter
        self.live_settings = live
        self.crops = crops
        self.realtime = realtime
        self.loop = loop
        self.session: SessionInfo | None = None
        self._ended = False
        self.live: LiveFeed | None = None
        self.video: VideoSource | None = None
        self.frames_submitted = 0
        self.frames_failed = 0
        self._failures_logged = 0
        self._failure_logged_at = -math.inf
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: set[asyncio.Task[Any]] = set()
        # A video read as fast as possible is paced by the pipeline instead: the reader
        # takes a slot per frame, given back when the frame is answered (sized once the
        # session exists, by _slot_count).
        self._slots = threading.BoundedSemaphore(2)
        self._stopping = threading.Event()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        tz = ZoneInfo(self.counter.timezone)
        day = local_day(time.time(), tz)
        counts: dict[str, dict[str, int]] = {}
        events_today = 0
        if self.records is not None:
            records = self.records
            closed = await self._offload(end_interrupted_events, records, self.name, tz)
            if closed:
                log.info(
                    "source %s: closed %d event(s) a previous run left open", self.name, closed
                )
            counts = await self._offload(records.load_counts, self.name, day)
            events_today = len(await self._offload(records.events_on, self.name, day))
        # Known before opening: only a file is sure not to be live (a network stream may be).
        paced_file = self.realtime is False and parse_source(self.uri).kind == "file"
        backpressure = Backpressure.WAIT if paced_file else Backpressure.LATEST
        self.session = await self.sessions.create(
            session_id=self.name,
            transport="source",
            pipeline=people_pipeline(
                self.counter,
                jpeg_quality=self.live_settings.jpeg_quality,
                day=day,
                counts=counts,
                events_today=events_today,
            ),
            backpressure=backpressure,
        )
        self._slots = threading.BoundedSemaphore(self._slot_count(self.session))
        self.live = LiveFeed(
            self.name,
            self.session.id,
            self.sessions,
            self._offload,
            self.records,
            self.counter,
            self.live_settings,
            crops=self.crops,
        )
        await self.live.start()
        self.video = VideoSource(
            self.uri,
            self._on_frame,
            realtime=self.realtime,
            loop=self.loop,
            on_end=self._on_end,
        )
        await self._offload(self.video.start)
        log.info("source %s (%s) feeds session %s", self.name, self.uri, self.session.id)

    async def _stop_reader(self) -> None:
        if self.video is not None:
            await self._offload(self.video.stop)

    async def stop(self) -> None:
        self._stopping.set()
        await self._stop_reader()
        for task in list(self._pending):
            task.cancel()
        if self.live is not None:
            await self.live.stop()
        if self.session is not None and not self._ended:
            summary = None
            with contextlib.suppress(SessionNotFound):  # ended from outside meanwhile
                summary = await self.sessions.end(self.session.id, reason="source_stopped")
            if summary is not None and self.live is not None:
                await self.live.ended(summary.results)

    def _slot_count(self, session: SessionInfo) -> int:
        """Frames a reader paced by the pipeline may have in the session at once.

        Under ``wait``, one for each place in the pipeline and one waiting, within the
        session's queue. Under ``latest`` (a network video that turned out not to be live), a
        frame that arrives behind a waiting one overtakes it, and its freed slot lets the
        reader decode the next one at once, which overtakes again: the reader would spin
        through the video, dropping nearly every frame. A frame waits only while the first
        stage is full, so the first stage's width and one more never overtake.
        """
        widths = session.stage_widths or (1,)
        if session.backpressure == Backpressure.WAIT:
            return max(1, min(sum(widths) + 1, session.queue))
        return widths[0] + 1

    @property
    def paced_by_pipeline(self) -> bool:
        """True for a file read as fast as the pipeline goes (not live, not realtime)."""
        video = self.video
        return video is not None and video.realtime is False and video.live is False

    def _on_frame(self, image: Any, pts_s: float, index: int) -> None:
        # Reader thread. Live and realtime sources hand the frame over and return at once
        # (the session keeps the latest); a fast file waits for a free slot.
        throttled = self.paced_by_pipeline
        if throttled:
            while not self._slots.acquire(timeout=0.2):
                if self._stopping.is_set():
                    return
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._submit, image, pts_s, throttled)
        elif throttled:
            self._slots.release()

    def _submit(self, image: Any, pts_s: float, throttled: bool) -> None:
        session = self.session
        if session is None or self._ended:
            if throttled:
                self._slots.release()
            return
        frame = FrameIn(image=RawImage(image), meta={"source": self.name, "pts": pts_s})
        task = asyncio.ensure_future(self.sessions.submit(session.id, frame))
        self._pending.add(task)
        task.add_done_callback(lambda t: self._done(t, throttled))
        self.frames_submitted += 1

    def _done(self, task: asyncio.Task[Any], throttled: bool) -> None:
        if throttled:
            self._slots.release()
        self._pending.discard(task)
        if not task.cancelled() and isinstance(task.exception(), SessionNotFound):
            self._session_gone()
        elif not task.cancelled() and task.exception() is not None:
            self.frames_failed += 1
            # A stuck or failing processor fails every frame, at the video's rate: report
            # the first at once, then one line per interval with how many more failed.
            now = time.monotonic()
            if now - self._failure_logged_at >= FAILURE_LOG_INTERVAL_S:
                log.warning(
                    "source %s: %d frame(s) failed since the last report; the latest: %r",
                    self.name,
                    self.frames_failed - self._failures_logged,
                    task.exception(),
                )
                self._failure_logged_at = now
                self._failures_logged = self.frames_failed

    def _session_gone(self) -> None:
        """The session was ended from outside (DELETE /v1/sessions/..., the console): stop
        reading rather than decode frames nobody will process."""
        if self._ended or self._stopping.is_set():
            return
        self._ended = True
        log.info("source %s: its session ended; stopping the reader", self.name)
        self._stopping.set()
        stopping = asyncio.ensure_future(self._stop_reader())
        self._pending.add(stopping)
        stopping.add_done_callback(self._pending.discard)

    def _on_end(self, error: BaseException | None) -> None:
        if error is not None:
            log.error("source %s stopped: %s", self.name, error)
        else:
            log.info("source %s ended", self.name)
