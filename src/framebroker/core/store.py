"""What the core needs from persistent storage, as a protocol; the SQL lives in ``storage``."""

from __future__ import annotations

from typing import Any, Protocol

from .session import SessionSummary

__all__ = ["Store"]


class Store(Protocol):
    """Durable record of sessions.

    Implementations are synchronous and thread-safe; the runtime calls them from worker
    threads, never from the event loop.
    """

    def session_started(self, session_id: str, info: dict[str, Any]) -> None:
        """Record a session that has just been created (``info`` as ``Session.info()``)."""

    def session_ended(self, summary: SessionSummary) -> None:
        """Record a session's end summary; idempotent on the session id."""

    def get_session(self, session_id: str) -> dict[str, Any] | None:
        """The stored record (``id``, ``state`` started|ended, ``summary`` when ended)."""

    def list_sessions(self, *, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """Records, newest first."""

    def save_snapshot(self, session_id: str, snapshot: dict[str, Any]) -> None:
        """Keep a live session's state so it can be resumed after a restart."""

    def load_snapshot(self, session_id: str) -> dict[str, Any] | None: ...

    def session_resumed(self, session_id: str) -> dict[str, Any] | None:
        """Take a suspended session's snapshot (``None`` if none) and mark it active again."""

    def close(self) -> None: ...
