"""Which session ids a video analysis client may connect with, and which are in use.

Three kinds of id are allowed: those configured (``ALLOWED_SESSION_IDS``), those handed out
by ``GET /get_session_id``, and those the server makes for a client that connected without
one (``GENERATE_SESSION_ID_ON_CONNECT``). Each id serves one connection: the original API removes an
id from the allowed list when its client disconnects, and so does this.

A handed-out id is ``TOKEN.SIGNATURE``: ``TOKEN`` holds its issue time and 16 random bytes,
``SIGNATURE`` is an HMAC-SHA256 of it under ``SECRET_KEY``. In a cluster the id starts with the
node that handed it out, ``NODE.TOKEN.SIGNATURE`` (signed with it), so a front proxy can send
the client's Socket.IO connection to that node, as it routes the ids ``Cluster.create`` makes;
any node with the same key accepts it. So checking one needs no table
(a server with the same key can check ids another one handed out) and an id cannot be made
up or altered; what the table keeps is bounded: ids are good for ``ttl_s`` after issue, and a
used-up id is remembered only until then. No I/O, no threads; the clock is injectable.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct
import time
from collections.abc import Callable, Iterable

from ..errors import CapacityExceeded, InvalidInput, SessionConflict, SessionNotFound

__all__ = ["SessionIds"]

_RANDOM_BYTES = 16
_SIGNATURE_BYTES = 16
_TOKEN_CHARS = 32  # base64url of 8 + 16 bytes, unpadded
_SIGNATURE_CHARS = 22  # base64url of 16 bytes, unpadded
_MAX_PREFIX_CHARS = 64  # "NODE." (a node's id prefix is at most 48 characters)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionIds:
    """Issue, check, claim and release video analysis session ids.

    ``claim`` marks an id in use by one connection (a second connection with it is refused);
    ``release`` ends that and uses the id up. At most ``max_ids`` handed-out ids are tracked
    (unused ones by signature only, used-up ones in a table swept by age); past that,
    :meth:`issue` raises :class:`CapacityExceeded`.
    """

    def __init__(
        self,
        key: bytes,
        *,
        allowed: Iterable[str] = (),
        ttl_s: float = 600.0,
        max_ids: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(key) < 16:
            raise ValueError(f"key must be at least 16 bytes, got {len(key)}")
        if ttl_s <= 0 or max_ids < 1:
            raise ValueError(f"ttl_s and max_ids must be positive, got {ttl_s}, {max_ids}")
        self._key = key
        self._allowed = set(allowed)
        self.ttl_s = ttl_s
        self.max_ids = max_ids
        self._clock = clock
        self.prefix = ""
        """Put before the ids :meth:`issue` makes (``NODE.``): in a cluster, the node's name in
        id characters, set once the node knows it."""
        self._in_use: set[str] = set()
        self._used_up: dict[str, float] = {}  # handed-out id -> when it stops being valid
        self._issued_recently: list[float] = []  # expiry times, oldest first

    def __len__(self) -> int:
        """Ids tracked: configured, in use, used up and not yet expired."""
        return len(self._allowed) + len(self._in_use) + len(self._used_up)

    @property
    def in_use(self) -> frozenset[str]:
        return frozenset(self._in_use)

    def _sign(self, token: str) -> str:
        mac = hmac.new(self._key, token.encode("ascii"), hashlib.sha256).digest()
        return _b64(mac[:_SIGNATURE_BYTES])

    def _sweep(self, now: float) -> None:
        if self._used_up:
            for sid in [s for s, until in self._used_up.items() if until <= now]:
                del self._used_up[sid]
        keep = 0
        for until in self._issued_recently:
            if until > now:
                break
            keep += 1
        del self._issued_recently[:keep]

    def issue(self) -> str:
        """A fresh id, good for ``ttl_s``; raises :class:`CapacityExceeded` when ``max_ids``
        issued ids are still within their time."""
        now = self._clock()
        self._sweep(now)
        if len(self._issued_recently) >= self.max_ids:
            raise CapacityExceeded(
                f"{len(self._issued_recently)} session ids were handed out in the last "
                f"{self.ttl_s:g} s, the limit is {self.max_ids}; retry later"
            )
        self._issued_recently.append(now + self.ttl_s)
        token = _b64(struct.pack(">d", now) + secrets.token_bytes(_RANDOM_BYTES))
        if self.prefix:
            token = f"{self.prefix}.{token}"
        return f"{token}.{self._sign(token)}"

    def _issued_at(self, session_id: str) -> float | None:
        """The issue time of a correctly signed id, else ``None``."""
        head, sep, signature = session_id.rpartition(".")
        token = head.rpartition(".")[2]  # after the node, if any (signed with it)
        if (
            not sep
            or len(token) != _TOKEN_CHARS
            or len(head) > _TOKEN_CHARS + _MAX_PREFIX_CHARS
            or len(signature) != _SIGNATURE_CHARS
            or not hmac.compare_digest(signature, self._sign(head))
        ):
            return None
        try:
            (issued_at,) = struct.unpack(">d", _unb64(token)[:8])
        except (binascii.Error, struct.error, ValueError):  # pragma: no cover - signed by us
            return None
        return float(issued_at)

    def check(self, session_id: str | None, *, field: str = "session_id") -> str:
        """``session_id`` if a client may connect with it now, else raise:
        :class:`InvalidInput` (missing), :class:`SessionNotFound` (unknown, expired, forged or
        used up), :class:`SessionConflict` (in use by another connection)."""
        if not session_id:
            raise InvalidInput(f"{field}: a session id is required", field=field)
        if session_id in self._in_use:
            raise SessionConflict(
                f"session {session_id!r} is already connected; an id serves one connection",
                field=field,
            )
        if session_id in self._allowed:
            return session_id
        now = self._clock()
        self._sweep(now)
        issued_at = self._issued_at(session_id)
        if issued_at is None or session_id in self._used_up or now >= issued_at + self.ttl_s:
            raise SessionNotFound(session_id, field=field)
        return session_id

    def verify(self, session_id: str | None, *, field: str = "session_id") -> str:
        """``session_id`` if it is an id this server (or another with the same key) could
        have handed out and it has not expired, in use or not: what an observer of a session
        must show. Raises :class:`InvalidInput` (missing) or :class:`SessionNotFound`."""
        if not session_id:
            raise InvalidInput(f"{field}: a session id is required", field=field)
        if session_id in self._allowed or session_id in self._in_use:
            return session_id
        issued_at = self._issued_at(session_id)
        if issued_at is None or self._clock() >= issued_at + self.ttl_s:
            raise SessionNotFound(session_id, field=field)
        return session_id

    def claim(self, session_id: str | None, *, field: str = "session_id") -> str:
        """:meth:`check`, then mark the id in use by one connection."""
        sid = self.check(session_id, field=field)
        self._in_use.add(sid)
        return sid

    def claim_new(self) -> str:
        """An id made for a client that came without one, already claimed."""
        sid = self.issue()
        self._in_use.add(sid)
        return sid

    def unclaim(self, session_id: str) -> None:
        """Undo :meth:`claim` of an id that turned out to be in use elsewhere (another node
        of the cluster): it stays as good as it was."""
        self._in_use.discard(session_id)

    def release(self, session_id: str) -> None:
        """The connection using ``session_id`` ended: the id is used up (safe to repeat)."""
        self._in_use.discard(session_id)
        self._allowed.discard(session_id)
        issued_at = self._issued_at(session_id)
        if issued_at is not None:
            until = issued_at + self.ttl_s
            if until > self._clock():
                self._used_up[session_id] = until
