"""Everything one server process runs besides its listeners, started and stopped together."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..config import Settings
from ..runtime.broker import Broker
from ..storage import PeopleRecords, SQLStore
from ..transports.live_ws import LiveHub

__all__ = ["Services"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Services:
    """The broker, the live hub and the video-source feeds of one process.

    Listeners (the main port and the compatibility ports) share one ``Services``, so a client
    of seed 001 on 8765 sees the same sessions as one on the main port.
    """

    settings: Settings
    broker: Broker
    hub: LiveHub
    records: PeopleRecords | None
    started: bool = field(default=False, init=False)

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
        return cls(settings, broker, hub, records)

    async def start(self) -> None:
        await self.broker.start()
        await self.hub.start()
        self.started = True

    async def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        await self.hub.stop()
        await self.broker.stop()
