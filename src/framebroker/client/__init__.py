"""Python clients for every framebroker API, sync and async.

=====================================  ==================================================
client                                 API
=====================================  ==================================================
:class:`TrackingClient`                tracking API: boxes in, tracked boxes out (``/v1``)
:class:`FramesClient`                  frame server for plugins (multipart ``POST /``)
:class:`LiveClient`                    live people counter (WebSocket ``/ws/live``)
:class:`VideoAnalysisClient`           video analysis over Socket.IO
:class:`WebRTCClient`                  WebRTC model broker (needs ``framebroker[webrtc]``)
=====================================  ==================================================

Every client takes the same keywords: ``api_key``, ``timeout``, ``retries``, ``backoff``
(:class:`Backoff`) and ``verify`` (TLS: ``True``, ``False``, a CA file, or an
``ssl.SSLContext``), and raises the errors of :mod:`framebroker.client.errors`, each with
the server's ``code`` and ``field``. Importing this package loads neither the server nor
its models (no onnxruntime, numba or aiortc); :class:`WebRTCClient` loads aiortc when
first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .connection import Backoff, Connection, Verify
from .errors import (
    ApiError,
    ClientError,
    Conflict,
    ConnectionFailed,
    ConnectionLost,
    InvalidRequest,
    InvalidURL,
    NotFound,
    PayloadTooLarge,
    ProtocolError,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    Timeout,
    TransportError,
    Unauthorized,
)
from .frames import AsyncFramesClient, FramesClient
from .live import Face, LiveClient, LiveEvent, LiveFrame, LiveMessage, LiveStats
from .tracking import (
    AsyncTrackingClient,
    SessionInfo,
    TrackedBox,
    TrackingClient,
    TrackResult,
)
from .video_analysis import FrameAck, VideoAnalysisClient, WindowResult

if TYPE_CHECKING:
    from .webrtc import Prediction, StreamResult, WebRTCClient, WebRTCStream

# aiortc and PyAV load only when the WebRTC client is first used.
_WEBRTC = ("Prediction", "StreamResult", "WebRTCClient", "WebRTCStream")
_LAZY = dict.fromkeys(_WEBRTC, "framebroker.client.webrtc")


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'framebroker.client' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "ApiError",
    "AsyncFramesClient",
    "AsyncTrackingClient",
    "Backoff",
    "ClientError",
    "Conflict",
    "Connection",
    "ConnectionFailed",
    "ConnectionLost",
    "Face",
    "FrameAck",
    "FramesClient",
    "InvalidRequest",
    "InvalidURL",
    "LiveClient",
    "LiveEvent",
    "LiveFrame",
    "LiveMessage",
    "LiveStats",
    "NotFound",
    "PayloadTooLarge",
    "Prediction",
    "ProtocolError",
    "RateLimited",
    "ServerError",
    "ServiceUnavailable",
    "SessionInfo",
    "StreamResult",
    "Timeout",
    "TrackResult",
    "TrackedBox",
    "TrackingClient",
    "TransportError",
    "Unauthorized",
    "Verify",
    "VideoAnalysisClient",
    "WebRTCClient",
    "WebRTCStream",
    "WindowResult",
]
