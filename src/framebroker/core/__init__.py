"""The sans-I/O core: frames in, results out; no sockets, no event loop, no SQL."""

from __future__ import annotations

from .bus import Bus, Message, Subscription
from .detections import BoxFormat, Detections, rows_of
from .frame import Frame, ImageSource, RawImage
from .inbox import Backpressure, Inbox
from .manager import ClientSessions, SessionManager, SessionPolicy, new_session_id
from .pipeline import FrameResult, Pipeline, SkipReason
from .processor import BaseModel, ProcessContext, Processor, Rate
from .rate import FrameRate
from .session import Session, SessionStats, SessionSummary
from .store import Owner, Store

__all__ = [
    "Backpressure",
    "BaseModel",
    "BoxFormat",
    "Bus",
    "ClientSessions",
    "Detections",
    "Frame",
    "FrameRate",
    "FrameResult",
    "ImageSource",
    "Inbox",
    "Message",
    "Owner",
    "Pipeline",
    "ProcessContext",
    "Processor",
    "Rate",
    "RawImage",
    "Session",
    "SessionManager",
    "SessionPolicy",
    "SessionStats",
    "SessionSummary",
    "SkipReason",
    "Store",
    "Subscription",
    "new_session_id",
    "rows_of",
]
