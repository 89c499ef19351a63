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
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

from ..core.frame import RawImage
from ..core.inbox import Backpressure
from ..core.manager import ProcessorSpec
from ..errors import SessionNotFound, SourceElsewhere, SourceNotFound
from ..media.reader import VideoSource
from ..media.sources import parse_source
from ..sessions import Feed, FrameIn, SessionInfo, Sessions
from .config import LiveSettings, PeopleCounterSettings
from .live import LiveFeed, Offload, end_interrupted_events, local_day
from .records import FaceCrops, PeopleRecords

__all__ = [
    "Elsewhere",
    "SourceAction",
    "SourceFeed",
    "SourceGate",
    "SourceState",
    "Sources",
    "parse_source_arg",
    "people_pipeline",
]

SourceState = Literal["running", "stopped", "ended", "failed", "starting", "standby"]
"""``ended``: a file came to its end (without ``--loop``); ``failed``: its reader gave up.
In a cluster, ``standby``: another node runs it (this one takes it over if that one stops);
``starting``: this node holds it and is starting it (after a takeover, until the previous
holder's session is released)."""


class SourceGate(Protocol):
    """Whether this process may run a source now: in a cluster, the source's lease (a
    source runs on one node at a time); without one there is no gate and a source just
    runs."""

    @property
    def held(self) -> bool:
        """This process may run the source."""
        ...

    @property
    def starting(self) -> bool:
        """It may, and the source is being started."""
        ...

    @property
    def node(self) -> str | None:
        """The node that runs it (this one's while ``held``), as last known."""
        ...


log = logging.getLogger(__name__)

END_NOTICE_S = 1.0
"""How long a frame refused for its ended session waits for the end's own notice."""

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
        self._end_watch: Feed | None = None
        self.gate: SourceGate | None = None
        """In a cluster, the source's lease: while another node holds it, this feed stands
        by (set by the server that assembles it, which starts and stops the feed as the
        lease comes and goes)."""
        self.state: SourceState = "stopped"
        self.reason: str | None = None
        """Why the source is not running: ``stopped`` (asked to), ``session_ended`` (its
        session was ended from outside), ``finished`` (a file came to its end), or the error
        that stopped its reader."""

    @property
    def running(self) -> bool:
        return self.state == "running"

    def describe(self) -> dict[str, Any]:
        """The source as ``/v1/sources`` shows it; in a cluster, with the node that runs it
        (a node that stands by says ``standby`` and names the holder)."""
        video = self.video
        state, reason, node = self.state, self.reason, None
        session = self.session
        gate = self.gate
        if gate is not None:
            node = gate.node
            if not gate.held:
                state, reason, session = "standby", None, None
            elif gate.starting:
                state = "starting"
        return {
            "name": self.name,
            "uri": parse_source(self.uri).label,
            "state": state,
            "reason": reason,
            "node": node,
            "session_id": session.id if session is not None else None,
            "frames_read": video.frames_read if video is not None else 0,
            "frames_submitted": self.frames_submitted,
            "frames_failed": self.frames_failed,
        }

    async def start(self) -> None:
        """Open the source and feed a new session from it; after :meth:`stop` (or its session
        ended from outside) this starts it again. Raises :class:`SourceElsewhere` on a
        node of a cluster that stands by for it (another node runs it)."""
        gate = self.gate
        if gate is not None and not gate.held:
            raise SourceElsewhere(self.name, gate.node)
        if self.state == "running":
            return
        self._stopping = threading.Event()
        self._ended = False
        self.session = None
        self.live = None
        self.video = None
        self.state, self.reason = "running", None
        try:
            await self._open()
        except BaseException as exc:
            self.state, self.reason = "failed", str(exc)
            await self._close(reason="source_failed")
            raise

    async def _open(self) -> None:
        self._loop = asyncio.get_running_loop()
        tz = ZoneInfo(self.counter.timezone)
        day = local_day(time.time(), tz)
        counts: dict[str, dict[str, int]] = {}
        events_today = 0
        fence: int | None = None
        if self.records is not None:
            records = self.records
            # First the fence, then the counts: a run this one replaces (another node's,
            # cut off) cannot store over what this run starts from.
            fence = await self._offload(records.claim_source, self.name)
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
            fence=fence,
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
        self._end_watch = self.sessions.subscribe(f"session/{self.session.id}/ended", maxlen=2)
        self._spawn(self._watch_end(self._end_watch))
        log.info("source %s (%s) feeds session %s", self.name, self.uri, self.session.id)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _watch_end(self, feed: Feed) -> None:
        """The session ended from outside (``DELETE /v1/sessions/...``, the console, the idle
        sweep): the source stops, and what the end closed (an event) is stored and pushed."""
        await feed.wait()
        for message in feed.drain():
            payload = message.payload
            if not self._ended and isinstance(payload, dict):
                self._session_gone(payload.get("results"))

    async def _stop_reader(self) -> None:
        if self.video is not None:
            await self._offload(self.video.stop)

    async def stop(self) -> None:
        """Stop reading and end the session; :meth:`start` opens the source again."""
        if self.state == "running":
            self.state, self.reason = "stopped", "stopped"
        await self._close(reason="source_stopped")

    async def _close(self, *, reason: str, results: Mapping[str, Any] | None = None) -> None:
        """Stop the reader and the live feed, end the session unless it ended already (then
        ``results`` are its end's), and store and push what that end closed (an event)."""
        self._stopping.set()
        await self._stop_reader()
        current = asyncio.current_task()
        for task in list(self._pending):
            if task is not current:  # this close may be one of them
                task.cancel()
        if self._end_watch is not None:
            self._end_watch.close()
            self._end_watch = None
        if self.live is not None:
            await self.live.stop()
        if self.session is not None and not self._ended:
            self._ended = True
            with contextlib.suppress(SessionNotFound):  # ended from outside meanwhile
                results = (await self.sessions.end(self.session.id, reason=reason)).results
        if results is not None and self.live is not None:
            await self.live.ended(results)

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
            # Its end is on its way from the bus, with the results that close its event
            # (see _watch_end); should that never come, stop all the same.
            if self._loop is not None:
                self._loop.call_later(END_NOTICE_S, self._session_gone)
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

    def _session_gone(self, results: Mapping[str, Any] | None = None) -> None:
        """The session was ended from outside: stop reading rather than decode frames
        nobody will process; ``results`` are its end's, when known."""
        if self._ended or self._stopping.is_set():
            return
        self._ended = True
        self.state, self.reason = "stopped", "session_ended"
        log.info("source %s: its session ended; stopping the reader", self.name)
        self._stopping.set()
        self._spawn(self._close(reason="session_ended", results=results))

    def _on_end(self, error: BaseException | None) -> None:
        # Reader thread: the video ended, or failed for good.
        if error is not None:
            log.error("source %s stopped: %s", self.name, error)
        else:
            log.info("source %s ended", self.name)
        loop = self._loop
        if loop is not None and not loop.is_closed() and not self._stopping.is_set():
            state: SourceState = "failed" if error is not None else "ended"
            why = str(error) if error is not None else "finished"
            loop.call_soon_threadsafe(self._ended_by_reader, state, why)

    def _ended_by_reader(self, state: SourceState, why: str) -> None:
        if self.state == "running":
            self.state, self.reason = state, why


SourceAction = Literal["stop", "start"]

Elsewhere = Callable[[str, str, SourceAction], Awaitable[dict[str, Any]]]
"""``(node, source, action)``: the action done by the node that runs the source, which
answers the source as it describes it."""


class Sources:
    """The server's ``--source`` feeds by name: listed, stopped and started again
    (``/v1/sources``).

    In a cluster a source runs on the node that holds its lease, and ``elsewhere`` (set by
    the server that assembles the node) reaches that node: a stop or a start asked of a
    node that stands by is done by the one that runs the source, wherever the request
    landed (with ``serve --workers`` the client cannot choose)."""

    def __init__(self, feeds: Iterable[SourceFeed] = ()) -> None:
        self._feeds = {feed.name: feed for feed in feeds}
        self.elsewhere: Elsewhere | None = None

    async def act(self, name: str, action: SourceAction) -> dict[str, Any]:
        """Stop or start the source where it runs; the source as it is then."""
        feed = self.get(name)
        gate = feed.gate
        if (
            self.elsewhere is not None
            and gate is not None
            and not gate.held
            and gate.node is not None
        ):
            return await self.elsewhere(gate.node, name, action)
        return await self.act_here(name, action)

    async def act_here(self, name: str, action: SourceAction) -> dict[str, Any]:
        """Stop or start the source on this node, whoever holds it (never relayed again: a
        node that lost the source in the meantime stands by, or refuses to start it)."""
        feed = self.get(name)
        await (feed.stop() if action == "stop" else feed.start())
        return feed.describe()

    def __iter__(self) -> Iterator[SourceFeed]:
        return iter(self._feeds.values())

    def __len__(self) -> int:
        return len(self._feeds)

    def get(self, name: str) -> SourceFeed:
        """Raises :class:`~framebroker.errors.NotFound` naming the known sources."""
        feed = self._feeds.get(name)
        if feed is None:
            known = ", ".join(sorted(self._feeds)) or "none (serve --source NAME=URI)"
            raise SourceNotFound(f"no source {name!r}; sources: {known}", field="name")
        return feed
