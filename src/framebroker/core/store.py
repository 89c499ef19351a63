"""What the runtime needs from persistent storage, as a protocol; the SQL lives in ``storage``.

Sessions carry their *owner*: the server process that runs them, named by an owner id and the
*epoch* of that owner's current life. A process begins a new epoch when it starts
(:meth:`Store.begin`); from then on every session it records carries ``(owner id, epoch)``,
and its writes to a session are fenced: they are refused with
:class:`~framebroker.errors.StaleOwner` once the session is held by another owner or by a
later life of the same one. Recovery ends only the sessions whose owner is gone
(:meth:`Store.recover`): at start-up, those of this owner's earlier lives; in a cluster, those
of an owner whose lease expired. See ``docs/storage.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .session import SessionSummary

__all__ = ["Owner", "Store"]


@dataclass(frozen=True, slots=True)
class Owner:
    """One life of a server process: its owner id and the epoch :meth:`Store.begin` gave it."""

    id: str
    epoch: int

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("an owner id is a non-empty string, got ''")
        if self.epoch < 0:
            raise ValueError(f"an epoch is >= 0, got {self.epoch}")

    @property
    def earlier(self) -> Owner:
        """Every earlier life of this owner, as :meth:`Store.recover` takes them."""
        return Owner(self.id, max(0, self.epoch - 1))


class Store(Protocol):
    """Durable record of sessions.

    Implementations are synchronous and thread-safe; the runtime calls them from worker
    threads, never from the event loop. Any method raises
    :class:`~framebroker.errors.StoreUnavailable` while the database cannot be reached; the
    store comes back by itself when it can.
    """

    def begin(self, owner_id: str) -> Owner:
        """Start a new life of ``owner_id``: its epoch goes up by one (the first is 1) and
        every write this store makes from now on carries, and is fenced by, the result."""
        ...

    def recover(self, gone: Sequence[Owner], *, reason: str = "server_restarted") -> int:
        """End the active sessions whose owner is gone: those recorded by an owner of
        ``gone`` at that owner's epoch or an earlier one, and those recorded before sessions
        had owners. Each gets a summary with ``reason`` (``server_restarted``: this server's
        earlier life; in a cluster ``node_lost``: another node died); returns how many.
        """
        ...

    def ping(self) -> None:
        """Return when the database answers; else raise ``StoreUnavailable``. The runtime
        asks before it does what cannot be undone without a write (ending a session)."""
        ...

    def session_started(self, session_id: str, info: dict[str, Any]) -> None:
        """Record a session that has just been created (``info`` as ``Session.info()``)."""
        ...

    def session_ended(self, summary: SessionSummary) -> None:
        """Record a session's end summary; the first end recorded wins. Raises
        ``StaleOwner`` when the session is active under another owner or epoch."""
        ...

    def get_session(self, session_id: str) -> dict[str, Any] | None:
        """The stored record (``id``, ``state`` active|ended, ``summary`` when ended)."""
        ...

    def list_sessions(self, *, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """Records, newest first."""
        ...

    def save_snapshot(self, session_id: str, snapshot: dict[str, Any]) -> None:
        """Keep a session's state so it can be resumed after a restart. Raises
        ``StaleOwner`` when the session is recorded under another owner or epoch."""
        ...

    def load_snapshot(self, session_id: str) -> dict[str, Any] | None: ...

    def session_resumed(self, session_id: str) -> dict[str, Any] | None:
        """Take a suspended session's snapshot (``None`` if none) and mark it active again,
        now owned by this store's owner."""
        ...

    def close(self) -> None: ...
