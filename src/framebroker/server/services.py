"""Everything one server process runs besides its listeners, started and stopped together."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..config import Settings
from ..people.feed import PeopleCounterConfig, SourceFeed, parse_source_arg
from ..people.live import LiveFeedConfig
from ..runtime.broker import Broker
from ..storage import FaceFolder, PeopleRecords, SQLStore
from ..transports.people_ws import LiveHub

__all__ = ["Services"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Services:
    """The broker, the live hub and the video-source feeds of one process.

    Listeners (the main port and the compatibility ports) share one ``Services``, so a client
    of the live people counter on 8765 sees the same sessions as one on the main port.
    """

    settings: Settings
    broker: Broker
    hub: LiveHub
    records: PeopleRecords | None
    feeds: list[SourceFeed] = field(default_factory=list)
    started: bool = field(default=False, init=False)
    listening: bool = field(default=True, init=False)
    """False while a server is still opening its listeners; /healthz answers 503 meanwhile."""

    @classmethod
    def build(cls, settings: Settings, broker: Broker) -> Services:
        records = PeopleRecords(broker.store) if isinstance(broker.store, SQLStore) else None
        hub = LiveHub(
            broker.bus,
            timezone=settings.people.timezone,
            client_queue=settings.live.client_queue,
            send_timeout_s=settings.live.send_timeout_s,
            records=records,
            faces_dir=settings.faces_dir,
            run_blocking=broker.run_blocking,
        )
        people, live = settings.people, settings.live
        counter = PeopleCounterConfig(
            timezone=people.timezone,
            lines=people.lines,
            min_frames=people.min_frames,
            detector=people.detector,
            event_window_s=people.event_window_s,
            event_threshold=people.event_threshold,
            event_cooldown_s=people.event_cooldown_s,
            faces=people.faces,
            jpeg_quality=live.jpeg_quality,
        )
        feed_config = LiveFeedConfig(
            timezone=people.timezone,
            max_fps=live.max_fps,
            stats_interval_s=live.stats_interval_s,
            faces_dir=settings.faces_dir,
            max_faces=people.max_faces,
            face_retention_days=people.face_retention_days,
        )
        feeds = []
        for i, arg in enumerate(settings.sources):
            name, uri = parse_source_arg(arg, i)
            feeds.append(
                SourceFeed(
                    name, uri, broker, records, counter, feed_config,
                    realtime=settings.source_realtime, loop=settings.loop,
                )
            )  # fmt: skip
        hub.known_sources = lambda: [feed.name for feed in feeds]
        return cls(settings, broker, hub, records, feeds)

    async def start(self) -> None:
        await self.broker.start()
        await self.hub.start()
        self.started = True
        if self.records is not None:
            await self._sweep_faces(self.records)
        for feed in self.feeds:
            await feed.start()

    async def _sweep_faces(self, records: PeopleRecords) -> None:
        """Before any feed writes a face, remove what a crash left in the faces folder."""
        folder = FaceFolder(self.settings.faces_dir)
        gone = await self.broker.run_blocking(lambda: folder.sweep(records.face_filenames()))
        if gone:
            log.info("removed %d face file(s) a previous run left unfinished", gone)

    async def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        for feed in self.feeds:
            try:
                await feed.stop()
            except Exception:
                log.exception("source %s did not stop cleanly", feed.name)
        await self.hub.stop()
        await self.broker.stop()
