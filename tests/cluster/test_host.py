"""Two and three nodes of one cluster in this process (real brokers, one real PostgreSQL
database, a real redis-server, the relay over real HTTP): a session answers the same
wherever its frames land, ids never collide, listings and DELETE span the cluster, a node that
dies has its sessions taken over and resumed with the same track ids, and input from inside
the cluster that cannot be used is refused and counted, never a crash."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from framebroker.cluster.host import Cluster
from framebroker.cluster.relay_wire import PATH_PREFIX, relay_token
from framebroker.config import Settings
from framebroker.errors import (
    ClusterUnavailable,
    SessionConflict,
    SessionNotFound,
)
from framebroker.runtime import Broker
from framebroker.server.app import build_registry
from framebroker.sessions import SessionInfo
from tests.redis_server import RedisServer

from .frames import frame, track_ids
from .helpers import eventually
from .nodes import SECRET, make_node, node_settings

Node = Cluster[Any]
MakeNode = Callable[..., Awaitable[Node]]


@pytest.fixture
async def nodes(
    redis_server: RedisServer, new_postgres_database: Callable[[], str], tmp_path: Path
) -> AsyncIterator[MakeNode]:
    url = new_postgres_database()
    made: list[Node] = []

    async def make(name: str, **cluster: Any) -> Node:
        node = make_node(node_settings(name, tmp_path, url, redis_server.url, **cluster))
        await node.start()
        made.append(node)
        return node

    yield make
    for node in reversed(made):
        await node.stop()


async def reference(frames: int) -> list[list[int]]:
    """Track ids of each frame on one plain broker: what every cluster path must match."""
    broker = Broker(build_registry(Settings()))
    await broker.start()
    try:
        info = await broker.create(transport="test", pipeline=["bytetrack"])
        return [track_ids(await broker.submit(info.id, frame(k))) for k in range(frames)]
    finally:
        await broker.stop()


async def crash(node: Node) -> None:
    """The node stops answering and renewing its lease, as if killed; its broker is left
    running where it is (a paused or cut-off node), so its later writes are the stale
    owner's."""
    for task in node._tasks:
        task.cancel()
    node._tasks = []
    assert node.directory is not None
    assert node._relay is not None
    await node.directory.stop(leave=False)
    await node._relay.stop()


async def test_a_session_made_on_one_node_answers_the_same_fed_through_another(
    nodes: MakeNode,
) -> None:
    a, b = await nodes("a"), await nodes("b")
    info = await a.create(transport="test", pipeline=["bytetrack"])
    assert info.id.startswith("a."), info.id
    assert info.node == "a"
    got = []
    for k in range(20):
        via = b if k % 2 else a  # alternate: local and relayed frames of one session
        got.append(track_ids(await via.submit(info.id, frame(k))))
    assert got == await reference(20)
    assert b.counters.relays[("submit", "ok")] == 10
    assert a.counters.served["submit"] == 10
    assert (await b.info(info.id)).node == "a"


async def test_client_chosen_ids_are_claimed_once_in_the_cluster(nodes: MakeNode) -> None:
    a, b = await nodes("a"), await nodes("b")
    made = await a.attach("cam-1", transport="rest", pipeline=["bytetrack"])
    assert made.node == "a"
    with pytest.raises(SessionConflict):
        await b.create(transport="rest", session_id="cam-1")
    # Attaching from another node reaches the same session, not a second one.
    again = await b.attach("cam-1", transport="rest")
    assert (again.id, again.node) == ("cam-1", "a")
    assert a.session_count == 1
    assert b.session_count == 0


async def test_attach_and_submit_reaches_the_owner_in_one_relayed_call(nodes: MakeNode) -> None:
    a, b = await nodes("a"), await nodes("b")
    got = []
    for k in range(10):
        via = b if k % 2 else a  # the first call makes "cam-2" on a; b relays the rest
        info, out = await via.attach_and_submit(
            "cam-2", frame(k), transport="rest", pipeline=["bytetrack"]
        )
        assert (info.id, info.node) == ("cam-2", "a")
        got.append(track_ids(out))
    assert got == await reference(10)
    assert b.counters.relays == {("attach_submit", "ok"): 5}
    assert a.counters.served == {"attach_submit": 5}
    assert b.session_count == 0
    # Without create, an id nobody runs is not found, wherever it is asked.
    for node in (a, b):
        with pytest.raises(SessionNotFound):
            await node.attach_and_submit("nobody", frame(0), transport="rest", create=False)


async def test_listing_from_any_node_shows_every_session_with_its_node(nodes: MakeNode) -> None:
    a, b, c = await nodes("a"), await nodes("b"), await nodes("c")
    ids = {
        (await a.create(transport="test")).id: "a",
        (await b.create(transport="test")).id: "b",
        (await c.attach("chosen", transport="test")).id: "c",
    }
    for node in (a, b, c):
        listed: list[SessionInfo] = await node.live()
        assert {s.id: s.node for s in listed} == ids


async def test_delete_from_another_node_ends_the_session_where_it_runs(nodes: MakeNode) -> None:
    a, b = await nodes("a"), await nodes("b")
    info = await a.create(transport="test", pipeline=["bytetrack"])
    await b.submit(info.id, frame(0))
    summary = await b.end(info.id, reason="deleted")
    assert (summary.id, summary.reason) == (info.id, "deleted")
    assert not a.local.holds(info.id)
    assert (await b.info(info.id)).state == "ended"
    assert a.directory is not None
    assert info.id not in a.directory.held
    with pytest.raises(SessionNotFound):
        await b.submit(info.id, frame(1))


async def test_a_dead_nodes_session_resumes_on_a_survivor_with_the_same_track_ids(
    nodes: MakeNode,
) -> None:
    a, b = await nodes("a"), await nodes("b")
    info = await a.create(transport="test", pipeline=["bytetrack"])
    other = await b.create(transport="test", pipeline=["bytetrack"])
    expected = await reference(24)
    got = [track_ids(await b.submit(info.id, frame(k))) for k in range(12)]
    await eventually(lambda: a.local.checkpoints >= 1, what="a snapshot of the session")
    await asyncio.sleep(0.3)  # past one more checkpoint interval: the snapshot is frame 11's
    await crash(a)
    # b's own session never notices.
    assert track_ids(await b.submit(other.id, frame(0))) == expected[0]
    # The next frame through b waits out a's lease (1 s), takes over, resumes.
    got += [track_ids(await b.submit(info.id, frame(k))) for k in range(12, 24)]
    assert got == expected
    assert b.counters.takeovers == 1
    assert b.counters.resumed == 1
    assert b.local.holds(info.id)
    assert (await b.info(info.id)).node == "b"
    # The stale owner's writes are refused: its snapshots no longer reach the store.
    failures = a.local.checkpoint_failures
    await a.local.submit(info.id, frame(99))
    await eventually(lambda: a.local.checkpoint_failures > failures, what="a fenced snapshot")


async def test_a_node_that_restarts_as_a_new_life_leaves_its_sessions_to_be_resumed(
    nodes: MakeNode,
) -> None:
    a, b = await nodes("a"), await nodes("b")
    info = await a.attach("kept", transport="test", pipeline=["bytetrack"])
    expected = await reference(10)
    got = [track_ids(await a.submit(info.id, frame(k))) for k in range(5)]
    await a.stop()  # a clean stop suspends: snapshot stored, lease given back
    got += [track_ids(await b.submit(info.id, frame(k))) for k in range(5, 10)]
    assert got == expected


async def test_new_sessions_get_cluster_unavailable_while_redis_is_down(
    nodes: MakeNode, redis_server: RedisServer
) -> None:
    a = await nodes("a")
    info = await a.create(transport="test", pipeline=["bytetrack"])
    redis_server.kill()
    try:
        with pytest.raises(ClusterUnavailable):
            await a.create(transport="test")
        # The session this node runs keeps answering.
        assert track_ids(await a.submit(info.id, frame(0))) == (await reference(1))[0]
        assert [s.id for s in await a.live()] == [info.id]
    finally:
        redis_server.start()

    async def heals() -> bool:
        try:
            await a.create(transport="test")
        except ClusterUnavailable:
            return False
        return True

    await eventually(heals, timeout_s=10, what="new sessions once Redis is back")


async def relay_post(node: Node, op: str, body: bytes, token: str) -> httpx.Response:
    assert node._relay is not None
    async with httpx.AsyncClient(trust_env=False) as client:
        return await client.post(
            f"http://127.0.0.1:{node._relay.port}{op}",
            content=body,
            headers={"authorization": f"Bearer {token}"},
        )


def refusals(node: Node) -> dict[str, int]:
    return dict(node.snapshot()["refusals"]["cluster"])


async def test_relay_calls_that_cannot_be_used_are_refused_and_counted(nodes: MakeNode) -> None:
    a = await nodes("a")
    token = relay_token(SECRET, "framebroker")
    wrong = await relay_post(a, PATH_PREFIX + "info", b'{"session_id": "x"}', "nope")
    assert wrong.status_code == 401
    old = await relay_post(a, "/relay/v0/info", b'{"session_id": "x"}', token)
    assert old.status_code == 404
    assert old.json()["refused"] == "relay_version"
    junk = await relay_post(a, PATH_PREFIX + "info", b"[1, 2", token)
    assert junk.status_code == 400
    unknown = await relay_post(a, PATH_PREFIX + "teleport", b'{"session_id": "x"}', token)
    assert unknown.status_code == 400
    odd = await relay_post(a, PATH_PREFIX + "source", b'{"name": "d", "action": "burn"}', token)
    assert odd.status_code == 400
    assert refusals(a) == {"relay_auth": 1, "relay_version": 1, "relay_malformed": 3}
    # A well-formed call for a source this node does not have: the error, not a refusal.
    none = await relay_post(a, PATH_PREFIX + "source", b'{"name": "d", "action": "stop"}', token)
    assert none.json()["error"]["type"] == "SourceNotFound", none.text
    # Still serving.
    info = await a.create(transport="test")
    ok = await relay_post(a, PATH_PREFIX + "info", f'{{"session_id": "{info.id}"}}'.encode(), token)
    assert ok.json()["ok"]["id"] == info.id
    text = a.metrics.render().decode()
    assert 'framebroker_cluster_refusals_total{part="cluster",reason="relay_auth"} 1.0' in text


async def test_a_directory_entry_naming_an_unknown_node_is_refused_not_followed(
    nodes: MakeNode, redis_server: RedisServer
) -> None:
    a, b = await nodes("a"), await nodes("b")
    assert a.directory is not None
    assert a._redis is not None
    # An entry claimed by a node whose record is not readable by this version.
    info = await b.create(transport="test")
    await a._redis.hset(a.keys.node("b"), "v", "99")
    a._nodes.clear()
    a._routes.clear()
    with pytest.raises(ClusterUnavailable):
        await a.submit(info.id, frame(0))
    snapshot = a.snapshot()["refusals"]
    assert snapshot["cluster"].get("unknown_node", 0) >= 1
    assert snapshot["directory"].get("version", 0) >= 1


async def test_a_stale_entry_for_a_session_its_owner_no_longer_runs_is_dropped(
    nodes: MakeNode,
) -> None:
    a, b = await nodes("a"), await nodes("b")
    info = await a.create(transport="test", pipeline=["bytetrack"])
    await a.local.end(info.id)  # ended under the cluster's feet: the entry stays a moment
    with pytest.raises(SessionNotFound):
        await b.submit(info.id, frame(0))
    assert a.directory is not None
    await eventually(lambda: info.id not in a.directory.held, what="the lease given back")
