"""Engine.IO sids across nodes: a sid names the node that made it, a long-polling request for it
sent to another node is answered by the one that made it, and a sid nobody can serve gets
Engine.IO's own 400 at once (malformed and forged ones counted as refusals).

The sids alone are pure; the routing runs two real nodes in this process (the whole app of
each, served by uvicorn on a free loopback port, a real redis-server and PostgreSQL, the
relay over real HTTP), driven with raw Engine.IO requests, as a client's polls would arrive.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import websockets

from framebroker.cluster.engineio_route import ENGINEIO_PATH, EngineIOSids, SidRefused
from framebroker.cluster.host import Cluster
from framebroker.server import build_app
from tests.redis_server import RedisServer

from ..in_process import free_port, serving
from .nodes import SECRET, node_settings


def test_a_sid_names_its_node_and_only_that_node_made_it() -> None:
    sids = EngineIOSids(SECRET, "c")
    sid = sids.make("host.example:1-w0", "host-example-1-w0")
    parts = sids.read(sid)
    assert parts.prefix == "host-example-1-w0"
    assert sids.made_by(parts, "host.example:1-w0")
    assert not sids.made_by(parts, "host.example:1-w1")  # another node, one prefix
    assert not EngineIOSids(SECRET, "other").made_by(parts, "host.example:1-w0")
    assert not EngineIOSids("another-secret", "c").made_by(parts, "host.example:1-w0")
    assert sids.make("a", "a") != sids.make("a", "a")
    forged = sid[:-4] + ("AAAA" if not sid.endswith("AAAA") else "BBBB")
    assert not sids.made_by(sids.read(forged), "host.example:1-w0")


@pytest.mark.parametrize(
    "sid",
    ["", "plain-engineio-sid", "a.b", "a.b.c.d", "a..c", "a.b c.d", "a/b.c.d", "a." + "x" * 200],
)
def test_a_sid_of_another_shape_is_malformed(sid: str) -> None:
    with pytest.raises(SidRefused) as refused:
        EngineIOSids.read(sid)
    assert refused.value.reason == "sid_malformed"


class Node:
    def __init__(self, url: str, cluster: Cluster[Any]) -> None:
        self.url = url
        self.cluster = cluster

    def refusals(self, reason: str) -> int:
        return self.cluster.refusals.counts.get(reason, 0)

    def relays(self, outcome: str) -> int:
        return self.cluster.counters.relays.get(("engineio", outcome), 0)


@pytest.fixture
def nodes(
    redis_server: RedisServer, new_postgres_database: Callable[[], str], tmp_path: Path
) -> Callable[[str], contextlib.AbstractAsyncContextManager[Node]]:
    """Node ``name`` of one cluster, served until its block ends."""
    database = new_postgres_database()

    @contextlib.asynccontextmanager
    async def node(name: str) -> AsyncIterator[Node]:
        settings = node_settings(name, tmp_path, database, redis_server.url)
        app = build_app(settings)
        cluster = app.state.services.broker
        assert isinstance(cluster, Cluster)
        port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        async with serving(config):
            yield Node(f"http://127.0.0.1:{port}", cluster)

    return node


EIO = "/socket.io/?EIO=4&transport=polling"


async def handshake(http: httpx.AsyncClient, url: str) -> str:
    """A new Engine.IO session at ``url``, for a stream of a session id handed out there."""
    stream = (await http.get(f"{url}/get_session_id")).json()["session_id"]
    r = await http.get(f"{url}{EIO}&session_id={stream}")
    assert r.status_code == 200, r.text
    assert r.text.startswith("0"), r.text
    sid: str = json.loads(r.text[1:])["sid"]
    return sid


async def test_a_poll_sent_to_the_node_that_did_not_make_its_sid_is_answered_by_the_one_that_did(
    nodes: Callable[[str], contextlib.AbstractAsyncContextManager[Node]],
) -> None:
    async with nodes("b") as b, httpx.AsyncClient(timeout=30) as http:
        async with nodes("a") as a:
            other = await together(a, b, http)
        # The owner stopped: a poll for its sid on b is an Engine.IO error, not a wait.
        r = await http.get(f"{b.url}{EIO}&sid={other}")
        assert r.status_code == 400, r.text
        assert json.loads(r.text).startswith("Invalid session"), r.text


async def together(a: Node, b: Node, http: httpx.AsyncClient) -> str:
    """Requests of a's sessions on b; a sid of a's for later."""
    sid = await handshake(http, a.url)
    assert sid.startswith("a."), sid
    # Socket.IO's connect, then a test event, both posted to b; their answers polled
    # from b, then from a: one Engine.IO session, wherever its requests land.
    r = await http.post(f"{b.url}{EIO}&sid={sid}", content=b"40")
    assert (r.status_code, r.text) == (200, "OK")
    r = await http.get(f"{b.url}{EIO}&sid={sid}")
    assert r.status_code == 200, r.text
    assert r.text.startswith("40{"), r.text  # the namespace is connected, on a
    r = await http.post(f"{b.url}{EIO}&sid={sid}", content=b'421["test",{"n":7}]')
    assert r.status_code == 200, r.text
    polled = ""
    for _ in range(5):  # the ack and the test event, as they come
        polled += (await http.get(f"{a.url}{EIO}&sid={sid}")).text + "\x1e"
        if '"n":7' in polled and "431[" in polled:
            break
    assert '431[{"data":{"n":7}' in polled, polled
    assert b.relays("ok") == 3
    assert a.cluster.counters.served["engineio"] == 3
    # A WebSocket upgrade through b is refused: the client keeps polling.
    ws_url = b.url.replace("http", "ws") + f"/socket.io/?EIO=4&transport=websocket&sid={sid}"
    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(ws_url):
            pass
    r = await http.post(f"{a.url}{EIO}&sid={sid}", content=b'42["test",1]')  # still live
    assert (r.status_code, r.text) == (200, "OK")

    # A sid nobody can serve: Engine.IO's 400 at once, malformed and forged ones counted.
    sids = EngineIOSids(SECRET, "framebroker")
    cases = {
        "garbage": ("sid_malformed", None),
        sid[:-3] + ("xyz" if not sid.endswith("xyz") else "abc"): ("sid_forged", None),
        sids.make("zz", "zz"): (None, "its node is gone"),
    }
    for bad, (reason, said) in cases.items():
        before = b.refusals(reason) if reason else 0
        r = await http.get(f"{b.url}{EIO}&sid={bad}")
        assert r.status_code == 400, (bad, r.text)
        assert json.loads(r.text).startswith("Invalid session"), r.text
        if reason:
            assert b.refusals(reason) == before + 1, b.cluster.refusals.counts
        if said:
            assert said in r.text, r.text
    r = await http.post(f"{b.url}{EIO}&sid=garbage", content=b"40")
    assert r.status_code == 400

    # The relay's Engine.IO door wants the relay's token, like its other calls.
    assert b.cluster._relay is not None
    relay = f"http://127.0.0.1:{b.cluster._relay.port}{ENGINEIO_PATH}"
    r = await http.get(f"{relay}?EIO=4&transport=polling", headers={"authorization": "no"})
    assert r.status_code == 401
    assert b.refusals("relay_auth") == 1
    return await handshake(http, a.url)
