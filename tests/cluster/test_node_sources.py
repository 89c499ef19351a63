"""A ``--source`` configured on two nodes of one cluster in this process (real servers'
``Services`` on one real PostgreSQL database and a real redis-server, the bundled clip
through the real people counter): it runs on one node, the other stands by and says who runs
it, and a clean stop of the holder hands it over at once, the day's counts carrying on from
the store as they are at the takeover."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from framebroker.cluster.host import Cluster
from framebroker.config import load_settings
from framebroker.errors import SourceElsewhere
from framebroker.media.sources import demo_clip
from framebroker.people.feed import SourceFeed
from framebroker.people.live import local_day
from framebroker.processors.line_counter import DEFAULT_LINE_NAME
from framebroker.server.services import Services
from tests.redis_server import RedisServer

from .helpers import eventually
from .nodes import SECRET

MakeServices = Callable[[str], Awaitable[Services]]

SOURCE_TTL_S = 1.0


@pytest.fixture
async def servers(
    redis_server: RedisServer, new_postgres_database: Callable[[], str], tmp_path: Path
) -> AsyncIterator[MakeServices]:
    url = new_postgres_database()
    made: list[Services] = []

    async def make(name: str) -> Services:
        settings = load_settings(
            data_dir=tmp_path / name,
            database_url=url,
            node_id=name,
            max_workers=2,
            cluster={
                "url": redis_server.url,
                "ttl_s": 1.0,
                "source_ttl_s": SOURCE_TTL_S,
                "checkpoint_every_s": 0.2,
            },
            analysis={"secret_key": SECRET},
            sources=[f"demo={demo_clip()}"],
            loop=True,
            people={"faces": False},
        )
        svc = Services.build(settings)
        await svc.start()
        made.append(svc)
        return svc

    yield make
    for svc in reversed(made):
        await svc.stop()


def feed(svc: Services) -> SourceFeed:
    return svc.feeds.get("demo")


def cluster(svc: Services) -> Cluster[Any]:
    assert isinstance(svc.broker, Cluster)
    return svc.broker


def metrics(svc: Services) -> str:
    return cluster(svc).metrics.render().decode()


async def test_a_source_on_two_nodes_runs_on_one_and_moves_on_a_clean_stop_with_its_counts(
    servers: MakeServices,
) -> None:
    a, b = await servers("a"), await servers("b")
    await eventually(
        lambda: any(feed(s).describe()["state"] == "running" for s in (a, b)),
        timeout_s=30,
        what="one node runs the source",
    )
    holder, standby = (a, b) if feed(a).running else (b, a)
    name = cluster(holder).node
    await eventually(lambda: feed(standby).describe()["node"] == name, what="standby knows")
    shown = feed(standby).describe()
    assert (shown["state"], shown["session_id"]) == ("standby", None)
    assert not feed(standby).running
    assert feed(holder).describe()["node"] == name
    with pytest.raises(SourceElsewhere) as refused:
        await feed(standby).start()
    assert refused.value.node == name
    # Listings on either node say which node runs it; the standby does not claim it.
    await eventually(lambda: cluster(standby).source_nodes() == {"demo": name}, what="advertised")
    assert cluster(holder).source_nodes() == {"demo": name}
    assert 'framebroker_cluster_source_held{source="demo"} 1.0' in metrics(holder)
    assert 'framebroker_cluster_source_held{source="demo"} 0.0' in metrics(standby)

    # The day's counts as the store has them when the holder stops (written after the
    # standby started: it must read them at the takeover, not at its own start).
    # The operator stops it, asking the standby (POST /v1/sources/demo/stop): the holder
    # stops it and keeps the lease; a start asked of the standby starts it there again.
    stopped = await standby.feeds.act("demo", "stop")
    assert (stopped["state"], stopped["node"]) == ("stopped", name)
    assert feed(holder).state == "stopped"
    started = await standby.feeds.act("demo", "start")
    assert (started["state"], started["node"]) == ("running", name)
    assert feed(holder).running
    assert not feed(standby).running
    assert cluster(holder).counters.served["source"] == 2
    await standby.feeds.act("demo", "stop")
    assert feed(standby).describe()["state"] == "standby"
    assert holder.records is not None
    day = local_day(time.time(), ZoneInfo(holder.settings.people.timezone))
    stored = {DEFAULT_LINE_NAME: {"in": 40, "out": 7}}
    await holder.broker.run_blocking(holder.records.save_counts, "demo", day, stored)

    stopped_at = time.monotonic()
    await holder.stop()
    await eventually(
        lambda: feed(standby).describe()["state"] == "running",
        timeout_s=30,
        what="the standby takes it over",
    )
    took = time.monotonic() - stopped_at
    assert took < 15, took  # a clean handover: no lease to wait out (the rest: its detector)
    assert feed(standby).describe()["node"] == cluster(standby).node
    live = feed(standby).live
    assert live is not None
    assert live.stats["count_in"] >= 40
    assert live.stats["count_out"] >= 7
    text = metrics(standby)
    assert 'framebroker_cluster_source_takeovers_total{source="demo"} 1.0' in text
    assert 'framebroker_cluster_source_losses_total{source="demo"} 0.0' in text
