"""Python clients for every framebroker API, sync and async.

================================  ============================  ==========================
sync                              async                         API
================================  ============================  ==========================
:class:`TrackingClient`           :class:`AsyncTrackingClient`  tracking API (``/v1``)
:class:`FramesClient`             :class:`AsyncFramesClient`    frame server for plugins
:class:`SyncLiveClient`           :class:`LiveClient`           live people counter
:class:`SyncVideoAnalysisClient`  :class:`VideoAnalysisClient`  video analysis (Socket.IO)
:class:`SyncWebRTCClient`         :class:`WebRTCClient`         WebRTC model broker [#]_
================================  ============================  ==========================

.. [#] needs ``pip install 'framebroker[webrtc]'`` (aiortc and PyAV)

Every client takes the same keywords: ``api_key``, ``timeout``, ``retries``, ``backoff``
(:class:`Backoff`) and ``verify`` (TLS: ``True``, ``False``, a CA file, or an
``ssl.SSLContext``), and raises the errors of :mod:`framebroker.client.errors`, each with
the server's ``code`` and ``field``. The live, video analysis and WebRTC protocols are
spoken once, in asyncio: their sync clients run the async ones on an event loop in a thread
they own (:mod:`~framebroker.client.loop_thread`), with the same arguments and errors.
Importing this package loads neither the server nor its models (no onnxruntime, numba or
aiortc); the WebRTC clients load aiortc when first used.
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
from .live import (
    Face,
    LiveClient,
    LiveEvent,
    LiveFrame,
    LiveMessage,
    LiveStats,
    SyncLiveClient,
)
from .tracking import (
    AsyncTrackingClient,
    SessionInfo,
    TrackedBox,
    TrackingClient,
    TrackResult,
)
from .video_analysis import (
    FrameAck,
    SyncVideoAnalysisClient,
    VideoAnalysisClient,
    WindowResult,
)

if TYPE_CHECKING:
    from .webrtc import (
        Prediction,
        StreamResult,
        SyncWebRTCClient,
        SyncWebRTCStream,
        WebRTCClient,
        WebRTCStream,
    )

# aiortc and PyAV load only when the WebRTC client is first used.
_WEBRTC = (
    "Prediction",
    "StreamResult",
    "SyncWebRTCClient",
    "SyncWebRTCStream",
    "WebRTCClient",
    "WebRTCStream",
)
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
    "SyncLiveClient",
    "SyncVideoAnalysisClient",
    "SyncWebRTCClient",
    "SyncWebRTCStream",
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
