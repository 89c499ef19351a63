"""A session's lane in the broker: its inbox of frames and the task pumping them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ..core.frame import Frame
from ..core.inbox import Inbox
from ..core.manager import ProcessorSpec
from ..core.pipeline import FrameResult, ProcessorCall
from ..core.session import Session
from .model_lanes import ModelLanes

__all__ = ["Lane", "Queued"]

Queued = tuple[Frame, "asyncio.Future[FrameResult]"]
"""A frame waiting in a lane's inbox, and the future its submitter awaits."""


@dataclass(eq=False)
class Lane:
    """One session as the broker schedules it.

    ``specs``: the pipeline as asked for, kept to rebuild it on resume. ``pending``: frames
    taken from the inbox and not answered yet; ``stuck``: per (stage, frame), the processor
    call that overran and has not returned; ``stalled`` is set meanwhile. ``arrived`` is set
    when a frame is queued (a staged pump waits on it). ``models``: under the ``newest``
    policy, the per-processor lanes the frames are offered to instead of the inbox.
    ``checkpointed``: see the field.
    """

    session: Session
    inbox: Inbox[Queued]
    specs: list[ProcessorSpec]
    task: asyncio.Task[None] | None = None
    pending: set[asyncio.Future[FrameResult]] = field(default_factory=set)
    stuck: dict[tuple[int, int], ProcessorCall] = field(default_factory=dict)
    stalled: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    models: ModelLanes | None = None
    checkpointed: int = 0
    """``frames_processed`` when the session was last snapshotted (-1: the last try
    failed)."""
