"""Engine.IO sessions across the nodes of a cluster: sids that name the node that made them, and
a request for another node's sid forwarded to it over the relay.

Engine.IO's long-polling transport (the first transport of the browser's Socket.IO client and
of python-socketio's) is a series of HTTP requests, each carrying the session's ``sid``, on
whatever connections the client has. Under ``serve --workers`` each new connection goes to
any worker, and without a sticky front proxy each request may reach any node; python-engineio
keeps a session in the process that made it, and any other answers ``Invalid session``. So:

- **A sid names its node.** :class:`EngineIOSids` makes ``<prefix>.<token>.<mac>``: the
  node's id prefix (the one its session ids start with, so a front proxy routes both the same
  way), 96 random bits, and a MAC over the node's full id and the token, keyed by the
  cluster's ``SECRET_KEY``. Nothing about a session is kept anywhere but the node that holds
  it: no directory entry, no Redis round trip per connection.
- **A request for a sid this node does not hold** (:class:`EngineIORouter`) is forwarded to
  the live node whose id the MAC names, over the relay (``/relay/v2/engineio``, the relay's
  token), and the owner's answer is the client's. A poll that waits at the owner waits here
  too, as long as Engine.IO lets it (its ping interval and timeout, plus slack).
- **A WebSocket upgrade for another node's sid is refused** (closed before it is accepted):
  the client's upgrade probe fails and it keeps polling, which works from any node. Carrying
  the socket through this node would put every message of the connection's life on two
  nodes and the relay, where a client that wants a WebSocket can connect with it directly
  (one TCP connection stays on its node).
- **A sid nobody can serve gets Engine.IO's own error** (HTTP 400 ``"Invalid session ..."``,
  the answer python-engineio gives for a sid it does not know), on which clients reconnect:
  a sid whose node is gone or does not answer, a malformed sid, a forged one (a live node's
  prefix, a MAC that node did not make). The last two are refusals of bad input, counted
  and logged as the cluster's other refusals (``sid_malformed``, ``sid_forged``).

Without a cluster none of this is built: python-engineio's own sids and no router.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qs

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from .relay_wire import PATH_PREFIX

__all__ = [
    "ENGINEIO_PATH",
    "REFUSED_HEADER",
    "EngineIOPeers",
    "EngineIORouter",
    "EngineIOSids",
    "Forwarded",
    "SidParts",
    "SidRefused",
    "bad_request",
]

log = logging.getLogger(__name__)

ENGINEIO_PATH = PATH_PREFIX + "engineio"
"""Where a node's relay answers forwarded Engine.IO requests (the relay's token required)."""

REFUSED_HEADER = "x-framebroker-relay-refused"
"""Set on a relay's own refusal of a forwarded Engine.IO request (its reason), so that it is
told apart from an answer of the owner's Engine.IO."""

MAX_SID_CHARS = 128
_PART = re.compile(r"[A-Za-z0-9_~-]+")
_TOKEN_BYTES = 12
_MAC_BYTES = 9


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class SidRefused(ValueError):
    """A sid this cluster did not make: ``reason`` is its refusal's counter (``sid_malformed``,
    ``sid_forged``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SidParts:
    """A sid as read: the node's id prefix, the random token, the MAC."""

    prefix: str
    token: str
    mac: str


class EngineIOSids:
    """Makes and checks the Engine.IO sids of one cluster (``secret``: its ``SECRET_KEY``,
    ``cluster``: its name; the key is derived from both, so it is not the relay's token and
    two clusters sharing a secret refuse each other's sids)."""

    def __init__(self, secret: str, cluster: str) -> None:
        self._key = hmac.new(
            secret.encode(), f"framebroker-engineio/v1/{cluster}".encode(), hashlib.sha256
        ).digest()

    def _mac(self, node: str, token: str) -> str:
        digest = hmac.new(self._key, f"{node}\n{token}".encode(), hashlib.sha256).digest()
        return _b64(digest[:_MAC_BYTES])

    def make(self, node: str, prefix: str) -> str:
        """A new sid of node ``node`` (whose ids start with ``prefix``)."""
        token = _b64(secrets.token_bytes(_TOKEN_BYTES))
        return f"{prefix}.{token}.{self._mac(node, token)}"

    @staticmethod
    def read(sid: str) -> SidParts:
        """The parts of ``sid``; raises :class:`SidRefused` (``sid_malformed``) for anything
        not shaped ``<prefix>.<token>.<mac>``."""
        if len(sid) > MAX_SID_CHARS:
            raise SidRefused(
                "sid_malformed", f"a sid of {len(sid)} characters, at most {MAX_SID_CHARS}"
            )
        parts = sid.split(".")
        if len(parts) != 3 or not all(_PART.fullmatch(p) for p in parts):
            raise SidRefused(
                "sid_malformed",
                f"expected a sid <prefix>.<token>.<mac> of A-Z a-z 0-9 _ ~ -, got {sid[:80]!r}",
            )
        return SidParts(*parts)

    def made_by(self, parts: SidParts, node: str) -> bool:
        """Whether node ``node`` made the sid ``parts`` were read from."""
        return hmac.compare_digest(parts.mac, self._mac(node, parts.token))


@dataclass(frozen=True, slots=True)
class Forwarded:
    """An Engine.IO answer from the owner: its status, headers and body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


class EngineIOPeers(Protocol):
    """What the router needs of its node (:class:`~.host.Cluster` is one)."""

    async def engineio_owner(self, sid: str) -> str | None:
        """The live node that made ``sid`` (this node's own id when it did), ``None`` when
        that node is gone or unknown; raises :class:`SidRefused` for a malformed or forged
        sid (counted)."""

    @property
    def node(self) -> str: ...

    async def engineio_forward(
        self,
        node: str,
        method: str,
        query: bytes,
        headers: list[tuple[str, str]],
        body: bytes,
        timeout_s: float,
    ) -> Forwarded | None:
        """The owner's answer to the request, ``None`` when it could not be reached or did
        not answer in time."""


_FORWARDED_HEADERS = frozenset(
    {"content-type", "origin", "access-control-request-method", "access-control-request-headers"}
)
"""Request headers the owner's Engine.IO reads once a session exists: the body's type and,
for its CORS answers (a browser's preflight too), the origin and what the preflight asks.
Its handshake (which read the rest) was its own."""


def bad_request(message: str) -> Forwarded:
    """Engine.IO's own refusal (python-engineio's ``_bad_request``): 400, a JSON string."""
    return Forwarded(400, [("content-type", "text/plain")], orjson.dumps(message))


def _sid_of(query: bytes) -> str | None:
    if b"sid=" not in query:
        return None
    values = parse_qs(query.decode("latin-1")).get("sid")
    return values[0] if values else None


class EngineIORouter:
    """Wraps a node's Socket.IO ASGI app: a request for a sid the node holds (``holds``), or
    without one (a handshake: the session is made here), goes to ``app``; one for another
    node's sid is forwarded to it (see the module docstring).

    ``max_body``: the most a forwarded POST may carry (Engine.IO's own limit; a longer body is
    cut one byte past it, so the owner refuses it as it would have); ``poll_timeout_s``: the
    longest a forwarded request may wait at the owner."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        holds: Callable[[str], bool],
        peers: EngineIOPeers,
        max_body: int,
        poll_timeout_s: float,
    ) -> None:
        self.app = app
        self.holds = holds
        self.peers = peers
        self.max_body = max_body
        self.poll_timeout_s = poll_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        sid = _sid_of(scope.get("query_string", b""))
        if sid is None or self.holds(sid):
            await self.app(scope, receive, send)
            return
        try:
            owner = await self.peers.engineio_owner(sid)
        except SidRefused:
            await self._refuse(scope, send, f"Invalid session {sid[:80]}")
            return
        if owner == self.peers.node:  # made here, closed since: Engine.IO says so itself
            await self.app(scope, receive, send)
            return
        if owner is None:
            await self._refuse(scope, send, f"Invalid session {sid}: its node is gone")
            return
        if scope["type"] == "websocket":
            # The upgrade probe fails; the client goes on polling (see the module docstring).
            await send({"type": "websocket.close", "code": 1008})
            return
        body = await _body(receive, self.max_body + 1)
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in scope.get("headers", [])
            if name.decode("latin-1").lower() in _FORWARDED_HEADERS
        ]
        answer = await self.peers.engineio_forward(
            owner, scope["method"], scope.get("query_string", b""), headers, body,
            self.poll_timeout_s,
        )  # fmt: skip
        if answer is None:
            answer = bad_request(f"Invalid session {sid}: its node does not answer")
        await _respond(send, answer)

    async def _refuse(self, scope: Scope, send: Send, message: str) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        else:
            await _respond(send, bad_request(message))


async def _body(receive: Receive, limit: int) -> bytes:
    """The request's body, at most ``limit`` bytes of it."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        if size < limit:
            chunks.append(chunk[: limit - size])
            size += len(chunks[-1])
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _respond(send: Send, answer: Forwarded) -> None:
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers]
    headers.append((b"content-length", str(len(answer.body)).encode()))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})
