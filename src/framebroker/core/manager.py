"""The directory of live sessions: create, attach, remove, list, find idle ones. No I/O, no threads.

Ids are made with :mod:`secrets` so they cannot be guessed. A transport that must honour a
client-chosen id (seed 000's ``Session-Id`` header) creates with ``session_id=``; such ids are
checked against a strict alphabet and, when an allow-list is configured, against it.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import CapacityExceeded, InvalidInput, SessionConflict, SessionNotFound
from .inbox import Backpressure
from .pipeline import Pipeline
from .session import Session

__all__ = [
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
    """

    max_sessions: int = 1024
    idle_timeout_s: float = 300.0
    allowed_ids: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {self.max_sessions}")
        if self.idle_timeout_s <= 0:
            raise ValueError(f"idle_timeout_s must be > 0, got {self.idle_timeout_s}")


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

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    def check_id(self, session_id: str, *, field: str = "Session-Id") -> str:
        """Validate a client-supplied id; raises :class:`InvalidInput` saying why not."""
        if not SESSION_ID_RE.fullmatch(session_id):
            raise InvalidInput(
                f"session id must be 1-128 characters of A-Z a-z 0-9 . _ ~ -, got {session_id!r}",
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
    ) -> Session:
        """Make a new session; a named id must be valid and free."""
        sid = self.check_id(session_id) if session_id is not None else None
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
            session = Session(
                sid, built, transport=transport, backpressure=backpressure, clock=self._clock
            )
            self._sessions[sid] = session
        return session

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
    ) -> Session:
        """The session with this id, created if it does not exist (seed 000's semantics)."""
        existing = self._sessions.get(session_id)
        if existing is not None:
            return existing
        try:
            return self.create(session_id=session_id, transport=transport, pipeline=pipeline)
        except SessionConflict:  # created by a concurrent request in between
            return self.get(session_id)

    def remove(self, session_id: str) -> Session:
        """Take a session out of the directory; raises :class:`SessionNotFound`."""
        with self._lock:
            try:
                return self._sessions.pop(session_id)
            except KeyError:
                raise SessionNotFound(session_id) from None

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
