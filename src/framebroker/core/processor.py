"""The one extension point: a processor turns frames into outputs, one session at a time.

A processor instance belongs to exactly one session and is never called concurrently (unless
its class says it is ``reentrant``), so it keeps its state in plain attributes. It does not
know which transport fed it.
"""

from __future__ import annotations

import inspect
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .frame import Frame
from .switches import Switches

__all__ = ["REQUIRED", "BaseModel", "ProcessContext", "Processor", "Rate", "keyword_options"]

REQUIRED: Any = inspect.Parameter.empty
"""The default :meth:`Processor.options` gives an option that has none: it must be set."""


def keyword_options(factory: Callable[..., Any]) -> dict[str, Any] | None:
    """The keyword arguments ``factory`` (a class or a function) takes, with their defaults
    (:data:`REQUIRED` for one without); ``None`` when it takes ``**kwargs``, or has no
    signature to read."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    options: dict[str, Any] = {}
    for param in params:
        if param.kind is param.VAR_KEYWORD:
            return None
        if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            options[param.name] = param.default
    return options


@dataclass(frozen=True, slots=True)
class Rate:
    """How often a processor runs: every ``every``-th frame, and about once per ``interval`` s.

    ``every`` counts the frames its pipeline processes (frames a ``latest`` session drops never
    reach it). ``interval`` follows the frame's own ``timestamp`` (arrival time when it has
    none), so a replay faster than realtime behaves as live: the processor runs on the first
    frame at or after each due time, and the next due time is one interval after the previous
    one rather than after the frame, so frames that do not fall on the grid do not slow the
    average rate below one run per interval. A gap in the stream longer than an interval does
    not cause catch-up runs, and a clock that goes backwards (a replay started over) makes the
    processor due at once. With both set, both must hold. The default runs on every frame.

    A processor class declares its default as ``rate = Rate(...)``; a configuration may set
    one per instance with ``{"name": ..., "rate": {"every": 5}}`` (see
    :class:`~framebroker.plugins.ProcessorRegistry`). Raises ``ValueError`` for an ``every``
    that is not an integer >= 1 or an ``interval`` that is not a finite number >= 0.
    """

    every: int = 1
    interval: float = 0.0

    def __post_init__(self) -> None:
        every: object = self.every
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"every must be an integer >= 1, got {every!r}")
        interval: object = self.interval
        if (
            not isinstance(interval, int | float)
            or isinstance(interval, bool)
            or not math.isfinite(interval)
            or interval < 0
        ):
            raise ValueError(f"interval must be a finite number >= 0, got {interval!r}")


@dataclass(slots=True)
class ProcessContext:
    """What a processor may know about where a frame comes from, and its handle on the others.

    ``shared`` lives as long as the session and is visible to every processor of it, for
    processors that cooperate (a detector leaving results for a counter).

    :meth:`enable`, :meth:`disable` and :meth:`is_enabled` let a processor switch others of its
    pipeline on or off from what it has seen (a menu screen makes the HUD readers pointless).
    A switch takes effect at once: processors later in the pipeline see it on this same frame,
    those that already ran on it from the next one. That is the rule ``frame.results`` follows
    too, and it lets a cheap gate placed first spare the expensive processors the very frame
    that shows they are not needed. A processor switched off keeps its state and its rate
    clock; switched back on, it runs on the first frame it is due. A processor may switch
    itself off; being off, it cannot switch itself on again.
    """

    session_id: str
    transport: str = "library"
    shared: dict[str, Any] = field(default_factory=dict)
    # Per thread: two stages of one pipeline run on two threads at once (Pipeline.stages),
    # and each call must find the switches of the pipeline calling it.
    _switches: dict[int, Switches] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def _board(self) -> Switches:
        switches = self._switches.get(threading.get_ident())
        if switches is None:
            raise RuntimeError("processors can be switched only while a pipeline runs this context")
        return switches

    @contextmanager
    def _bound(self, switches: Switches) -> Iterator[None]:
        """Hand ``switches`` to the processors for the duration of one pipeline call."""
        key = threading.get_ident()
        outer = self._switches.get(key)
        self._switches[key] = switches
        try:
            yield
        finally:
            if outer is None:
                del self._switches[key]
            else:
                self._switches[key] = outer

    def enable(self, name: str) -> None:
        """Switch the processor ``name`` on; raises ``ValueError`` if the pipeline has none.

        Raises ``RuntimeError`` when called outside a pipeline's ``run``/``end``.
        """
        self._board().enable(name)

    def disable(self, name: str) -> None:
        """Switch the processor ``name`` off; raises ``ValueError`` if the pipeline has none.

        Raises ``RuntimeError`` when called outside a pipeline's ``run``/``end``.
        """
        self._board().disable(name)

    def is_enabled(self, name: str) -> bool:
        """Whether ``name`` is on; raises ``ValueError`` if the pipeline has no such processor."""
        return self._board().is_enabled(name)


class Processor(ABC):
    """Base class of every processor and user model.

    Subclasses set ``name`` (the key used in configs, timing reports and switches),
    ``needs_image`` (whether ``process`` reads pixels) and ``rate`` (a default that a config
    may replace per instance). ``process`` returns a dict merged into the frame's outputs
    (later processors win on equal keys), or ``None`` for nothing yet. Exceptions raised by
    ``process`` are reported per frame and do not end the session.
    """

    name: ClassVar[str] = "processor"
    needs_image: ClassVar[bool] = False
    rate: Rate = Rate()
    config_only: ClassVar[frozenset[str]] = frozenset()
    """Parameters a client request may not set (file paths, say): only the server's config."""
    ends_stage: bool = False
    """True for a processor heavy enough to deserve a pipeline stage of its own: the
    processors after it may then handle frame *n* while it already handles frame *n + 1*
    (see :attr:`Pipeline.stages`). Whatever it hands to later processors must then travel on
    the frame (detections, ``frame.results``), not in ``ctx.shared``, which is per session."""
    reentrant: ClassVar[bool] = False
    """True for a processor whose ``process`` keeps nothing from one frame to the next (a
    detector), so it may run on several frames of one session at once. A stage made only of
    such processors is :meth:`~Pipeline.parallel`: a host may keep several frames in it, which
    is how two single-threaded inference runs fill two cores for one video stream."""

    @classmethod
    def options(cls) -> dict[str, Any] | None:
        """The options (keyword arguments) a spec may set, with their defaults
        (:data:`REQUIRED` for one without); ``None``: any keyword is taken.

        Read from the constructor's signature. The registry refuses a spec that names any
        other option, and shows each session's settings with these defaults filled in. A
        class whose constructor forwards ``**kwargs`` overrides this to list them.
        """
        return keyword_options(cls)

    @classmethod
    def warm_up(cls) -> None:
        """Called once per server process before it serves, in a worker thread.

        Compile kernels or load model files here, so the first session does not wait for it.
        A subclass may take keyword parameters: those of the server's defaults for it (see
        :class:`~framebroker.plugins.ProcessorRegistry`) that it names are passed.
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
"""The WebRTC model broker's name for :class:`Processor`: a model is a processor that reads
pixels."""
