"""Calling a session's owner: one HTTP client per node, kept-alive connections to every other
node's relay port.

The client is aiohttp's rather than httpx's: a relayed call is on the path of every request
that lands on a node other than its session's owner, and measured in one process against
the relay's own server (uvicorn + Starlette, 1 kB bodies), httpx's AsyncClient spent 4.0 ms
of CPU per call where aiohttp spent 1.5 ms, server included (``benchmarks/bench_cluster.py``
shows the whole hop).

A call either returns the owner's result, raises the error the owner raised (as its own
class, :mod:`.relay_wire`), or raises :class:`OwnerUnreachable` when the owner could not be
asked or did not answer: the cue for the cluster to look the owner up again and, once its
lease has run out, take the session over. An answer this node cannot read is a counted
refusal, raised as :class:`~framebroker.errors.ClusterUnavailable` (503): a client retries,
nothing crashes.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
from yarl import URL

from ..errors import ClusterUnavailable, FramebrokerError
from .connection import Refusals
from .directory import NodeInfo
from .engineio_route import ENGINEIO_PATH, REFUSED_HEADER, Forwarded
from .relay_wire import PATH_PREFIX, RelayRefused, dumps, error_from_wire, loads_object

__all__ = ["OwnerUnreachable", "RelayClient"]

log = logging.getLogger(__name__)


class OwnerUnreachable(Exception):
    """The owner could not be reached (``sent`` False: the call never left, so it certainly
    did nothing) or did not answer (``sent`` True: it may have run)."""

    def __init__(self, node: str, message: str, *, sent: bool) -> None:
        super().__init__(f"node {node!r}: {message}")
        self.node = node
        self.sent = sent


MAX_POLLS = 1024
"""Engine.IO requests this node forwards at once, at most (more wait for a connection)."""

_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "date", "server"}
    | {"content-encoding", REFUSED_HEADER}
)
"""Response headers of the hop between nodes, not of the owner's answer."""


def _session(
    timeout: aiohttp.ClientTimeout, *, limit: int, limit_per_host: int
) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        timeout=timeout,
        connector=aiohttp.TCPConnector(limit=limit, limit_per_host=limit_per_host),
        trust_env=False,  # a proxy from the environment must not sit between nodes
        raise_for_status=False,
    )


def _base_url(node: NodeInfo) -> str:
    port = node.ports.get("relay")
    if port is None:
        raise RelayRefused("unknown_node", f"node {node.id!r} advertises no relay port")
    host = f"[{node.address}]" if ":" in node.address else node.address
    return f"http://{host}:{port}"


class RelayClient:
    """Relayed calls with ``token``, each bounded by ``timeout_s`` (connecting by
    ``connect_timeout_s``); refusals are counted in ``refusals``."""

    def __init__(
        self,
        token: str,
        refusals: Refusals,
        *,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 1.0,
    ) -> None:
        self.refusals = refusals
        self._headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=connect_timeout_s)
        self._connect_timeout_s = connect_timeout_s
        self._session: aiohttp.ClientSession | None = None
        self._polls: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use: aiohttp binds a session to the running loop.
        if self._session is None:
            self._session = _session(self._timeout, limit=256, limit_per_host=64)
        return self._session

    def _polls_client(self) -> aiohttp.ClientSession:
        # Forwarded Engine.IO polls wait at the owner for up to its ping interval: they have
        # connections of their own, so that many waiting polls never queue a frame's call.
        if self._polls is None:
            timeout = aiohttp.ClientTimeout(connect=self._connect_timeout_s)
            self._polls = _session(timeout, limit=MAX_POLLS, limit_per_host=MAX_POLLS)
        return self._polls

    async def close(self) -> None:
        for session in (self._session, self._polls):
            if session is not None:
                await session.close()
        self._session = self._polls = None

    async def forward(
        self,
        node: NodeInfo,
        method: str,
        query: bytes,
        headers: list[tuple[str, str]],
        body: bytes,
        timeout_s: float,
    ) -> Forwarded:
        """An Engine.IO request answered by ``node``'s own Engine.IO server (its status,
        headers and body, whatever they are); raises ``OwnerUnreachable``, and
        ``ClusterUnavailable`` when the relay refused the call (a counted refusal)."""
        try:
            url = _base_url(node) + ENGINEIO_PATH
        except RelayRefused as e:
            self.refusals.refuse(e.reason, str(e))
            raise ClusterUnavailable(str(e), operation="relay") from None
        if query:
            url += "?" + query.decode("latin-1")
        # Uncompressed: the owner would compress for this node, which would undo it.
        sent = [
            *headers,
            ("authorization", self._headers["authorization"]),
            ("accept-encoding", "identity"),
        ]
        try:
            async with self._polls_client().request(
                method,
                URL(url, encoded=True),
                data=body,
                headers=sent,
                timeout=aiohttp.ClientTimeout(total=timeout_s, connect=self._connect_timeout_s),
            ) as response:
                status, content = response.status, await response.read()
                kept = [(k, v) for k, v in response.headers.items() if k.lower() not in _HOP]
                refused = response.headers.get(REFUSED_HEADER)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as e:
            raise OwnerUnreachable(node.id, f"cannot connect: {e!r}", sent=False) from None
        except (TimeoutError, aiohttp.ClientError) as e:
            raise OwnerUnreachable(node.id, f"no answer: {e!r}", sent=True) from None
        if refused is not None:
            message = f"node {node.id!r} refused an Engine.IO request ({status}): {content!r:.200}"
            self.refusals.refuse(refused, message)
            raise ClusterUnavailable(message, operation="relay")
        return Forwarded(status, kept, content)

    async def call(self, node: NodeInfo, op: str, body: dict[str, Any]) -> Any:
        """The owner's result of ``op``; raises what the owner raised, ``OwnerUnreachable``,
        or ``ClusterUnavailable`` for an answer that cannot be used."""
        try:
            url = _base_url(node) + PATH_PREFIX + op
        except RelayRefused as e:
            self.refusals.refuse(e.reason, str(e))
            raise ClusterUnavailable(str(e), operation="relay") from None
        try:
            async with self._client().post(
                url, data=dumps(body), headers=self._headers
            ) as response:
                status, content = response.status, await response.read()
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as e:
            raise OwnerUnreachable(node.id, f"cannot connect: {e!r}", sent=False) from None
        except (TimeoutError, aiohttp.ClientError) as e:
            raise OwnerUnreachable(node.id, f"no answer: {e!r}", sent=True) from None
        try:
            answer = loads_object(content)
            if status != 200:
                reason = str(answer.get("refused", "relay_malformed"))
                raise RelayRefused(reason, f"node {node.id!r} refused {op} ({status}): {answer}")
            if "error" in answer:
                raise _owner_error(answer["error"], self.refusals)
            if "ok" not in answer:
                raise RelayRefused("relay_malformed", f"node {node.id!r}: no result in {op}")
        except RelayRefused as e:
            self.refusals.refuse(e.reason, str(e))
            raise ClusterUnavailable(
                f"node {node.id!r} gave an answer this node cannot use: {e}", operation="relay"
            ) from None
        return answer["ok"]


def _owner_error(data: Any, refusals: Refusals) -> FramebrokerError:
    try:
        return error_from_wire(data)
    except RelayRefused as e:
        if e.reason != "unknown_error":
            raise
        refusals.refuse(e.reason, str(e))
        return FramebrokerError(str(e))
