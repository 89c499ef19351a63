"""The directory of live sessions: create, attach, remove, list, find idle ones. No I/O, no threads.

Ids are made with :mod:`secrets` so they cannot be guessed. A transport that must honour a
client-chosen id (the tracking API's ``Session-Id`` header) creates with ``session_id=``;
such ids are checked against a strict alphabet and, when an allow-list is configured,
against it.

A transport names the client that creates a session (``client=``, its address), so one
client's share is counted here, once for every transport: at most
``max_sessions_per_client`` sessions at a time, each bounded to ``max_fps_per_session``.
Sessions the server feeds itself have no client and neither bound.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import (
    CapacityExceeded,
    ClientSessionLimit,
    InvalidInput,
    SessionConflict,
    SessionNotFound,
)
from .inbox import Backpressure
from .pipeline import Pipeline
from .session import Session

__all__ = [
    "ClientSessions",
    "PipelineFactory",
    "ProcessorSpec",
    "SessionManager",
    "SessionPolicy",
    "new_session_id",
]

SESSION_ID_RE = re.compile(r"[A-Za-z0-9._~-]{1,128}")

ProcessorSpec = str | Mapping[str, Any]
"""A processor by name (``"bytetrack"``, ``"pkg.mod:Class"``) or ``{"name": ..., **params}``."""

PipelineFactory = Callable[[Sequence[ProcessorSpec] | None], Pipeline]


def new_session_id() -> str:
    """A fresh unguessable id (128 bits, URL-safe)."""
    return secrets.token_urlsafe(16)


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """Bounds on the session directory.

    ``allowed_ids``: when not ``None``, the only ids a client may name.
    ``max_sessions_per_client`` and ``max_fps_per_session``: 0 is no limit.
    """

    max_sessions: int = 1024
    idle_timeout_s: float = 300.0
    allowed_ids: frozenset[str] | None = None
    max_sessions_per_client: int = 0
    max_fps_per_session: float = 0.0

    def __post_init__(self) -> None:
        if self.max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {self.max_sessions}")
        if self.idle_timeout_s <= 0:
            raise ValueError(f"idle_timeout_s must be > 0, got {self.idle_timeout_s}")
        if self.max_sessions_per_client < 0:
            raise ValueError(
                f"max_sessions_per_client must be >= 0, got {self.max_sessions_per_client}"
            )
        if not self.max_fps_per_session >= 0:
            raise ValueError(f"max_fps_per_session must be >= 0, got {self.max_fps_per_session}")


class ClientSessions:
    """How many sessions each client holds, at most ``limit`` each (0: no limit).

    Only clients holding a session have an entry, so the map never outgrows the sessions.
    Thread-safe: sessions are made in the worker pool and ended on the event loop.
    """

    def __init__(self, limit: int = 0) -> None:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        self.limit = limit
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._held)

    def held(self, client: str | None) -> int:
        return self._held.get(client, 0) if client is not None else 0

    def take(self, client: str | None) -> None:
        """Count one more session for ``client`` (``None``: the server's own, not counted);
        raises :class:`~framebroker.errors.ClientSessionLimit` when it holds its limit."""
        if client is None:
            return
        with self._lock:
            held = self._held.get(client, 0)
            if self.limit and held >= self.limit:
                raise ClientSessionLimit(
                    f"client {client} already holds {held} sessions, the limit "
                    f"(limits.max_sessions_per_client) is {self.limit}; end one first",
                    limit="max_sessions_per_client",
                )
            self._held[client] = held + 1

    def give_back(self, client: str | None) -> None:
        """One session of ``client`` has ended."""
        if client is None:
            return
        with self._lock:
            held = self._held.get(client, 0) - 1
            if held > 0:
                self._held[client] = held
            else:
                self._held.pop(client, None)


class SessionManager:
    """Thread-safe directory of sessions; ending a session's pipeline is the caller's job.

    ``remove`` takes a session out of the directory and hands it back, so the caller can run
    its ``end`` off the event loop and persist the summary.
    """

    def __init__(
        self,
        pipeline_factory: PipelineFactory,
        policy: SessionPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._factory = pipeline_factory
        self.policy = policy or SessionPolicy()
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self.clients = ClientSessions(self.policy.max_sessions_per_client)
        """Sessions per client; a transport whose sessions live elsewhere (video analysis
        streams) takes and gives back its slots here too, so a client has one count."""

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    def check_id(self, session_id: str, *, field: str = "Session-Id") -> str:
        """Validate a client-supplied id; raises :class:`InvalidInput` saying why not."""
        # Ids never become paths, and "." and ".." (the only ones that could mean one) are
        # refused anyway, should one ever be used to name a file.
        if not SESSION_ID_RE.fullmatch(session_id) or not session_id.strip("."):
            shown = session_id if len(session_id) <= 64 else f"{session_id[:64]}…"
            raise InvalidInput(
                "session id must be 1-128 characters of A-Z a-z 0-9 . _ ~ -, not only dots, "
                f"got {shown!r} ({len(session_id)} characters)",
                field=field,
            )
        allowed = self.policy.allowed_ids
        if allowed is not None and session_id not in allowed:
            raise SessionNotFound(session_id, field=field)
        return session_id

    def create(
        self,
        *,
        session_id: str | None = None,
        transport: str = "library",
        pipeline: Sequence[ProcessorSpec] | None = None,
        backpressure: Backpressure = Backpressure.WAIT,
        client: str | None = None,
    ) -> Session:
        """Make a new session; a named id must be valid and free, and ``client`` (the
        creator's key; ``None``: the server's own) under its share of sessions.

        Raises :class:`InvalidInput`, :class:`SessionNotFound` (not on the allow-list),
        :class:`SessionConflict`, :class:`CapacityExceeded` (the server is full) and
        :class:`~framebroker.errors.ClientSessionLimit`; nothing is kept then.
        """
        sid = self.check_id(session_id) if session_id is not None else None
        self.check_client(client)  # before building a pipeline that may load models
        built = self._factory(pipeline)
        with self._lock:
            if len(self._sessions) >= self.policy.max_sessions:
                raise CapacityExceeded(
                    f"the server holds {len(self._sessions)} sessions, "
                    f"the limit is {self.policy.max_sessions}"
                )
            if sid is None:
                sid = new_session_id()
                while sid in self._sessions:  # pragma: no cover - 128 random bits
                    sid = new_session_id()
            elif sid in self._sessions:
                raise SessionConflict(f"session {sid!r} already exists", field="Session-Id")
            self.clients.take(client)
            session = Session(
                sid,
                built,
                transport=transport,
                backpressure=backpressure,
                clock=self._clock,
                client=client,
                max_fps=self.policy.max_fps_per_session if client is not None else 0.0,
            )
            self._sessions[sid] = session
        return session

    def check_client(self, client: str | None) -> None:
        """Raise :class:`~framebroker.errors.ClientSessionLimit` if ``client`` holds its
        share of sessions already (:meth:`create` checks again when it takes the slot)."""
        limit = self.clients.limit
        if client is not None and limit and self.clients.held(client) >= limit:
            self.clients.take(client)  # raises, saying why

    def get(self, session_id: str) -> Session:
        try:
            return self._sessions[session_id]
        except KeyError:
            raise SessionNotFound(session_id) from None

    def attach(
        self,
        session_id: str,
        *,
        transport: str = "library",
        pipeline: Sequence[ProcessorSpec] | None = None,
        client: str | None = None,
    ) -> Session:
        """The session with this id, created if it does not exist (the tracking API's semantics).

        Attaching to an existing session takes no slot: it stays its creator's."""
        existing = self._sessions.get(session_id)
        if existing is not None:
            return existing
        try:
            return self.create(
                session_id=session_id, transport=transport, pipeline=pipeline, client=client
            )
        except SessionConflict:  # created by a concurrent request in between
            return self.get(session_id)

    def remove(self, session_id: str) -> Session:
        """Take a session out of the directory, giving its client's slot back; raises
        :class:`SessionNotFound`."""
        with self._lock:
            try:
                session = self._sessions.pop(session_id)
            except KeyError:
                raise SessionNotFound(session_id) from None
            self.clients.give_back(session.client)
        return session

    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    def ids(self) -> list[str]:
        return list(self._sessions)

    def idle(self, *, now: float | None = None, busy: Collection[str] = ()) -> list[str]:
        """Ids of sessions idle longer than the policy allows, oldest activity first.

        ``busy`` names sessions with work in flight; they are never idle. The caller ends
        them (``remove`` plus the session's ``end``), so the summary is not lost.
        """
        t = self._clock() if now is None else now
        limit = self.policy.idle_timeout_s
        stale = [
            s for sid, s in self._sessions.items() if t - s.last_active > limit and sid not in busy
        ]
        stale.sort(key=lambda s: s.last_active)
        return [s.id for s in stale]
