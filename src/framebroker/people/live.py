"""Turns a live session's results into what its watchers see and what the store keeps.

A :class:`LiveFeed` follows one session (a camera, a file): for every processed frame it
publishes the annotated picture, on event transitions an event, twice a second the stats,
and it persists the day's counts, the traffic events and the saved faces. It publishes plain
payloads on the bus (``live/<source>/frame|stats|event``); a transport formats each once and
fans it out.

Store, then show: a frame's new counts, its event and its faces are committed before anything
that shows them is published (the picture draws the counts too), so a crash, even SIGKILL,
never takes back a number, an event or a face that a client was shown. Counts change only on
the frames where someone crosses a line, so this is one small transaction per crossing, not
per frame; SQLite in WAL mode with ``synchronous=NORMAL`` commits it without an fsync.

While the database is away (:class:`~framebroker.errors.StoreUnavailable`) the counter keeps
counting, and holds back what it could not store: the stats keep the stored totals, the
picture (which draws the counts) and the events wait; every stats tick retries, and once the
counts and events are stored they are shown, in order. So a client is never shown a crossing
that is not stored; a crash before the database is back loses the crossings held back, none
of which was shown. A face that could not be stored is dropped, unshown (a later, better crop
of the same person is saved as a new face).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from ..core.bus import Message
from ..errors import StaleOwner, StoreUnavailable
from ..sessions import Feed, FrameOut, Sessions
from .config import LiveSettings, PeopleCounterSettings
from .records import FaceCrops, PeopleRecords, face_filename

__all__ = [
    "LiveFeed",
    "Offload",
    "end_interrupted_events",
    "live_timestamp",
    "local_day",
]

Offload = Callable[..., Awaitable[Any]]
"""``await offload(fn, *args)``: ``fn(*args)`` off the event loop (the worker pool)."""

log = logging.getLogger(__name__)

STATS_FIELDS = (
    "count_in",
    "count_out",
    "face_count",
    "daily_event_count",
    "event_active",
    "current_event_count_in",
)


def live_timestamp(t: float, tz: ZoneInfo) -> str:
    """``YYYY-MM-DD HH:MM:SS.mmm`` in ``tz``, the people counter's original format."""
    return datetime.fromtimestamp(t, tz).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def local_day(t: float, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(t, tz).strftime("%Y-%m-%d")


def _carries_record(message: Message) -> bool:
    """Whether a result holds something the feed stores: an event or a face."""
    result = message.payload
    if not isinstance(result, FrameOut):
        return False
    out = result.outputs
    return isinstance(out.get("event"), dict) or bool(out.get("faces"))


class LiveFeed:
    """Follows one session's results; start it on the event loop, stop it before the broker.

    Blocking work (database, face files) goes through ``run_blocking`` (the broker's pool).
    """

    def __init__(
        self,
        source: str,
        session_id: str,
        sessions: Sessions,
        run_blocking: Offload,
        records: PeopleRecords | None,
        people: PeopleCounterSettings | None = None,
        live: LiveSettings | None = None,
        *,
        crops: FaceCrops | None = None,
        fence: int | None = None,
    ) -> None:
        self.source = source
        self.session_id = session_id
        self.sessions = sessions
        self.people = people or PeopleCounterSettings()
        self.live = live or LiveSettings()
        self.tz = ZoneInfo(self.people.timezone)
        self._run_blocking = run_blocking
        self._records = records
        self._faces = crops
        # This run's fence of the source (PeopleRecords.claim_source); set when a later run
        # claimed it: this one's counts are stale and never stored again.
        self._fence = fence
        self._fenced = False
        self.stats: dict[str, Any] = dict.fromkeys(STATS_FIELDS, 0)
        self.stats["event_active"] = False
        self.day = local_day(time.time(), self.tz)
        self.frames_published = 0
        self._next_frame_at = -math.inf
        self._lines: dict[str, dict[str, int]] = {}
        # Crossings per (hour, line) today, from the growth of the line totals between frames.
        self._hours: dict[tuple[int, str], tuple[int, int]] = {}
        # Versions of the counts: changed by frames, stored by saves. They differ while a
        # save is under way or failed (the stats tick retries); a flag cleared before the
        # save's end would let a frame show counts not stored yet.
        self._counts_changed = 0
        self._counts_stored = 0
        # One save at a time, so an older snapshot of the counts never commits after a newer.
        self._saving = asyncio.Lock()
        # Events not stored yet (the database was away), oldest first, with their frame's
        # time and day; stored, then published, in order. Bounded: one left out was never
        # shown.
        self._events_unstored: deque[tuple[dict[str, Any], float, str]] = deque(maxlen=256)
        self._storing_events = asyncio.Lock()
        # The stats of the newest frame, shown once everything they count is stored.
        self._latest: dict[str, Any] = {}
        self._away = False  # the database was away at the last write: logged once
        self._event_id: int | None = None
        self._face_ids: OrderedDict[int, int] = OrderedDict()  # track id -> face id, bounded
        self._faces_added = 0
        self._feed: Feed | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._feed = self.sessions.subscribe(
            f"session/{self.session_id}/result",
            maxlen=4,
            # A feed that falls behind skips frames, never the ones that start or end an
            # event or save a face: those are stored before anything shows them.
            keep=_carries_record,
        )
        if self._records is not None:
            records = self._records
            self.stats["face_count"] = await self._run_blocking(
                records.count_faces, self.day, self.source
            )
            # The counter resumes today's totals, so growth is measured from them and the
            # hours already stored are kept.
            self._lines = await self._run_blocking(records.load_counts, self.source, self.day)
            self._hours = await self._run_blocking(records.load_hourly, self.source, self.day)
            # Listeners see the day's totals from the first stats on, not zeros until the
            # first frame is through the pipeline (a detector warming up takes seconds).
            self.stats["count_in"] = sum(int(c.get("in", 0)) for c in self._lines.values())
            self.stats["count_out"] = sum(int(c.get("out", 0)) for c in self._lines.values())
            events = await self._run_blocking(records.events_on, self.source, self.day)
            self.stats["daily_event_count"] = len(events)
        self._tasks = [
            asyncio.create_task(self._follow(), name=f"live-{self.source}"),
            asyncio.create_task(self._tick(), name=f"live-stats-{self.source}"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._feed is not None:
            self._feed.close()
        await self._flush_counts()

    async def ended(self, results: Mapping[str, Any]) -> None:
        """The session ended (the source stopped, the server too): an event it left running
        ends now with the count it had, stored, then pushed like any other, so a clean stop
        never leaves one open for the next start to close with an unknown count.

        ``results`` are the ended session's (its processors' ``end``); call after :meth:`stop`.
        """
        summary = results.get("traffic_events")
        event = summary.get("event") if isinstance(summary, Mapping) else None
        if not isinstance(event, dict) or event.get("status") != "ended":
            return
        now = time.time()
        await self._record_event(event, now, self.day)
        self.stats["event_active"] = False
        self.stats["current_event_count_in"] = 0
        self.sessions.publish(f"live/{self.source}/event", {"data": dict(event), "time": now})
        self.sessions.publish(f"live/{self.source}/stats", {"data": dict(self.stats), "time": now})

    # -- following results -----------------------------------------------------------------

    async def _follow(self) -> None:
        feed = self._feed
        assert feed is not None
        while True:
            await feed.wait()
            for message in feed.drain():
                result = message.payload
                if isinstance(result, FrameOut) and not result.dropped:
                    try:
                        await self.handle(result)
                    except Exception:
                        log.exception("live feed %s failed on a result", self.source)

    async def handle(self, result: FrameOut) -> None:
        """Persist what one processed frame produced, then publish it (see the module)."""
        out = result.outputs
        day = str(out.get("day") or local_day(result.timestamp, self.tz))
        if day != self.day:
            await self._flush_counts()
            self.day = day
            self.stats["face_count"] = 0
            self._face_ids.clear()
            self._lines, self._hours = {}, {}
        lines = out.get("lines")
        if isinstance(lines, dict) and lines != self._lines:
            self._add_to_hours(lines, result.timestamp)
            self._lines = {k: dict(v) for k, v in lines.items()}
            self._counts_changed += 1
            await self._flush_counts()
        event = out.get("event")
        if isinstance(event, dict):
            self._events_unstored.append((dict(event), result.timestamp, self.day))
        await self._store_events()  # publishes each event once it is stored
        faces = out.get("faces")
        if isinstance(faces, list) and faces and self._records is not None:
            for face in faces:
                try:
                    await self._record_face(face)
                except StoreUnavailable:
                    self._store_away("a face")
        for key in ("count_in", "count_out", "daily_event_count", "current_event_count_in"):
            if key in out:
                self._latest[key] = int(out[key])
        if "event_active" in out:
            self._latest["event_active"] = bool(out["event_active"])
        if self.holding_back:
            return  # nothing it shows is published until what it counts is stored
        self.stats.update(self._latest)
        image = out.get("annotated_image")
        if isinstance(image, str) and self._frame_due(time.monotonic()):
            self.frames_published += 1
            self.sessions.publish(
                f"live/{self.source}/frame", {"jpeg_b64": image, "time": time.time()}
            )

    @property
    def holding_back(self) -> bool:
        """True while counts or events are not stored yet (the database is away)."""
        return self._counts_dirty or bool(self._events_unstored)

    @property
    def _counts_dirty(self) -> bool:
        return self._records is not None and self._counts_changed != self._counts_stored

    def _store_away(self, what: str) -> None:
        if not self._away:
            self._away = True
            log.warning(
                "source %s: the database is unavailable (storing %s); new counts and events "
                "are held back until they are stored",
                self.source,
                what,
            )

    def _add_to_hours(self, lines: dict[str, dict[str, int]], frame_time: float) -> None:
        hour = datetime.fromtimestamp(frame_time, self.tz).hour
        for name, counts in lines.items():
            before = self._lines.get(name, {})
            grew_in = int(counts.get("in", 0)) - int(before.get("in", 0))
            grew_out = int(counts.get("out", 0)) - int(before.get("out", 0))
            if grew_in < 0 or grew_out < 0:  # the counter started over (a reset): all is new
                grew_in, grew_out = int(counts.get("in", 0)), int(counts.get("out", 0))
            if grew_in or grew_out:
                cin, cout = self._hours.get((hour, name), (0, 0))
                self._hours[(hour, name)] = (cin + grew_in, cout + grew_out)

    def _frame_due(self, now: float) -> bool:
        """Whether a frame may go out at ``now`` (monotonic seconds), ``max_fps`` a second
        on average.

        Each frame sent books the next slot one interval later. A frame that comes late for
        its slot keeps the schedule if it is less than two intervals late, so frames that
        arrive in pairs (the detector works on two at a time) or a little faster than the
        cap still go out at the cap: "one interval since the last frame" let only every
        other frame of a 40 fps pipeline through a cap of 30. Later than that, as after a
        pause, the schedule starts afresh rather than sending what it missed in a burst.
        """
        if self.live.max_fps <= 0:
            return True
        if now < self._next_frame_at:
            return False
        interval = 1.0 / self.live.max_fps
        late = now - self._next_frame_at
        self._next_frame_at = (self._next_frame_at if late < 2 * interval else now) + interval
        return True

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.live.stats_interval_s)
            # Only does something after a failed write: the database may be back.
            await self._flush_counts()
            await self._store_events()
            if not self.holding_back:
                self.stats.update(self._latest)
                if self._away:
                    self._away = False
                    log.info("source %s: the database is back; all is stored", self.source)
            self.sessions.publish(
                f"live/{self.source}/stats", {"data": dict(self.stats), "time": time.time()}
            )

    # -- persistence -----------------------------------------------------------------------

    async def _flush_counts(self) -> None:
        """Store the day's counts if they changed since they were last stored."""
        async with self._saving:
            version = self._counts_changed
            if not self._counts_dirty or self._records is None or self._fenced:
                return
            try:
                await self._run_blocking(
                    functools.partial(
                        self._records.save_counts,
                        self.source,
                        self.day,
                        dict(self._lines),
                        dict(self._hours),
                        fence=self._fence,
                    )
                )
            except StoreUnavailable:
                self._store_away("counts")
                return
            except StaleOwner as e:
                # Another run of the source (another node's, after a takeover) carries the
                # day's counts on: these are held back for good, never shown.
                self._fenced = True
                log.warning("source %s: counts not stored: %s", self.source, e.message)
                return
            except Exception:
                log.exception("could not save the counts of %s", self.source)
                return
            self._counts_stored = version

    async def _store_events(self) -> None:
        """Store the events not stored yet, oldest first, publishing each once it is; stop at
        the first the database cannot take (the next call retries it)."""
        async with self._storing_events:
            while self._events_unstored:
                event, frame_time, day = self._events_unstored[0]
                try:
                    await self._record_event(event, frame_time, day)
                except StoreUnavailable:
                    self._store_away("an event")
                    return
                except Exception:
                    log.exception("could not store an event of %s; not shown", self.source)
                    self._events_unstored.popleft()
                    continue
                self._events_unstored.popleft()
                self.sessions.publish(
                    f"live/{self.source}/event", {"data": event, "time": time.time()}
                )

    async def _record_event(self, event: dict[str, Any], frame_time: float, day: str) -> None:
        if self._records is None:
            return
        records = self._records
        if event.get("status") == "started":
            self._event_id = await self._run_blocking(
                lambda: records.event_started(
                    source=self.source,
                    day=day,
                    started_at=frame_time,
                    start_time=str(event.get("start_time", "")),
                )
            )
        elif event.get("status") == "ended" and self._event_id is not None:
            event_id = self._event_id
            await self._run_blocking(
                lambda: records.event_ended(
                    event_id,
                    ended_at=frame_time,
                    end_time=str(event.get("end_time", "")),
                    count_in=int(event.get("count_in", 0)),
                )
            )
            self._event_id = None  # only once stored: a failed write is tried again

    async def _record_face(self, face: dict[str, Any]) -> None:
        """A new track's face is indexed in the transaction that renames its file into place;
        a better crop of a known one replaces the file, then updates the row."""
        records, crops = self._records, self._faces
        if records is None or crops is None:
            return
        track_id = int(face["track_id"])
        jpeg = bytes(face["jpeg"])
        quality = float(face.get("quality", 0.0))
        score = float(face.get("score", 0.0))
        known = self._face_ids.get(track_id)
        if known is not None:
            await self._run_blocking(crops.write, face_filename(known), jpeg)
            await self._run_blocking(
                lambda: records.update_face(known, quality=quality, score=score)
            )
        else:
            staged = await self._run_blocking(crops.stage, jpeg)
            try:
                face_id, _ = await self._run_blocking(
                    lambda: records.add_face(
                        source=self.source, track_id=track_id, day=self.day, quality=quality,
                        score=score, place=lambda name: crops.place(staged, name),
                    )
                )  # fmt: skip
            except BaseException:
                await self._run_blocking(crops.discard, staged)
                raise
            self._face_ids[track_id] = face_id
            while len(self._face_ids) > 4096:
                self._face_ids.popitem(last=False)
            self.stats["face_count"] = int(self.stats["face_count"]) + 1
            self._faces_added += 1
        if self._faces_added and self._faces_added % 100 == 0:
            await self._apply_retention()

    async def _apply_retention(self) -> None:
        """Rows go first, then files: a crash in between leaves files that the start-up sweep
        removes, never a row without its file."""
        records, crops = self._records, self._faces
        if records is None or crops is None:
            return
        oldest = datetime.now(self.tz) - timedelta(days=self.people.face_retention_days)
        gone = await self._run_blocking(
            lambda: records.expire_faces(
                keep=self.people.max_faces, min_day=oldest.strftime("%Y-%m-%d")
            )
        )
        for name in gone:
            await self._run_blocking(crops.remove, name)


def end_interrupted_events(records: PeopleRecords, source: str, tz: ZoneInfo) -> int:
    """Close the source's events that a previous process left running; returns how many.

    A process that dies (SIGKILL, power cut) cannot end its running event. Each one is ended
    at the last moment the store heard from the source (its counts' last write, not before
    the event's start), with ``count_in`` unknown (null). Call it before the source starts.
    """
    running = records.open_events(source)
    if not running:
        return 0
    last = records.last_counted_at(source) or 0.0
    for event in running:
        ended_at = max(float(event["started_at"]), last)
        records.event_ended(
            int(event["id"]),
            ended_at=ended_at,
            end_time=datetime.fromtimestamp(ended_at, tz).strftime("%H:%M:%S"),
            count_in=None,
        )
    return len(running)
