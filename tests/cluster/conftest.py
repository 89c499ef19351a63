"""Real ``redis-server`` processes for the cluster tests (``tests/redis_server.py``), and the
clients and parts on them with short leases, so a takeover takes a second, not five."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from framebroker.cluster.connection import connect
from framebroker.cluster.keys import Keys
from tests.redis_server import RedisServer, RedisServerMissing


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh server for one test: nothing kept on disk; ``restart()``, ``kill()`` and
    ``pause()`` for the fault tests. Fails (never skips) without ``redis-server``."""
    try:
        server = RedisServer()
    except RedisServerMissing as e:
        pytest.fail(str(e), pytrace=False)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def keys() -> Keys:
    return Keys("test")


@pytest.fixture
async def clients(redis_server: RedisServer) -> AsyncIterator[list[Redis]]:
    """Four separate clients (each with its own connections, as separate nodes have):
    ``clients[i]`` is node i's."""
    made = [connect(redis_server.url, timeout_s=0.5, name=f"node{i}") for i in range(4)]
    yield made
    for client in made:
        await client.aclose()
