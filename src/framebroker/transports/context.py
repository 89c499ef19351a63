"""What every transport is handed when the server assembles it: the seam and two helpers.

A transport speaks to sessions only through :class:`~framebroker.sessions.Sessions`; besides
that it gets its own settings section (an argument of its factory), somewhere to count what
it refuses (:class:`Telemetry`) and somewhere to run blocking work off the event loop
(:data:`Offload`), both belonging to the process it runs in.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..sessions import Sessions

__all__ = ["Offload", "ServerContext", "Telemetry"]

Offload = Callable[..., Awaitable[Any]]
"""``await offload(fn, *args)``: ``fn(*args)`` in the process's worker pool."""


class Telemetry(Protocol):
    """What a transport counts in ``/metrics`` (the process's
    :class:`~framebroker.runtime.metrics.Metrics` is one)."""

    def error(self, transport: str, code: str) -> None:
        """A request or message refused with the error ``code``."""

    def frames_dropped(self, transport: str, n: int = 1, reason: str = "overtaken") -> None:
        """Frames a transport dropped before they reached a session."""


@dataclass(frozen=True, slots=True)
class ServerContext:
    sessions: Sessions
    telemetry: Telemetry
    offload: Offload
