"""The one extension point: a processor turns frames into outputs, one session at a time.

A processor instance belongs to exactly one session and is never called concurrently, so it
keeps its state in plain attributes. It does not know which transport fed it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .frame import Frame

__all__ = ["BaseModel", "ProcessContext", "Processor", "Rate"]


@dataclass(frozen=True, slots=True)
class Rate:
    """How often a processor runs: every ``every``-th frame, or at most once per ``interval`` s.

    Intervals follow the frame's own timestamp, so a replay faster than realtime behaves as
    live. The default runs on every frame.
    """

    every: int = 1
    interval: float = 0.0

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"every must be >= 1, got {self.every}")
        if not math.isfinite(self.interval) or self.interval < 0:
            raise ValueError(f"interval must be a finite number >= 0, got {self.interval}")


@dataclass(slots=True)
class ProcessContext:
    """What a processor may know about where a frame comes from.

    ``shared`` lives as long as the session and is visible to every processor of it, for
    processors that cooperate (a detector leaving results for a counter).
    """

    session_id: str
    transport: str = "library"
    shared: dict[str, Any] = field(default_factory=dict)


class Processor(ABC):
    """Base class of every processor and user model.

    Subclasses set ``name`` (the key used in configs and timing reports), ``needs_image``
    (whether ``process`` reads pixels) and ``rate``. ``process`` returns a dict merged into the
    frame's outputs (later processors win on equal keys), or ``None`` for nothing yet.
    Exceptions raised by ``process`` are reported per frame and do not end the session.
    """

    name: ClassVar[str] = "processor"
    needs_image: ClassVar[bool] = False
    rate: Rate = Rate()
    config_only: ClassVar[frozenset[str]] = frozenset()
    """Parameters a client request may not set (file paths, say): only the server's config."""

    @classmethod
    def warm_up(cls) -> None:
        """Called once per server process before it serves, in a worker thread.

        Compile kernels or load model files here, so the first session does not wait for it.
        """

    def setup(self, ctx: ProcessContext) -> None:
        """Called once, in a worker thread, before the first frame."""

    @abstractmethod
    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        """Handle one frame."""

    def end(self, ctx: ProcessContext) -> dict[str, Any] | None:
        """Called once when the session ends; the result goes into the session summary."""
        return None

    def close(self) -> None:
        """Release resources; called after ``end``."""

    def snapshot(self) -> dict[str, Any] | None:
        """A JSON-serialisable state to resume from, or ``None`` if the processor has none."""
        return None

    def restore(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`snapshot`'s output."""
        raise ValueError(f"processor {self.name!r} keeps no state to restore")


BaseModel = Processor
"""The seed-004 name for :class:`Processor`: a model is a processor that reads pixels."""
