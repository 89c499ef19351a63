"""The five original API documents framebroker honours, and where each lives here.

Modules are named by what they carry (``box_tracking``, ``frame_upload``, ...); this table
maps them back to the documents the APIs came from, and names each original API's own
listener, which ``serve --compat`` opens on the port its clients expect
(``--compat-port NAME=PORT`` moves one). Plain data: the CLI, the start-up log, the
configuration and the docs read it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["COMPAT_PORTS", "ORIGINAL_APIS", "OriginalApi", "original_env"]


@dataclass(frozen=True, slots=True)
class OriginalApi:
    """One original API: its document, what framebroker calls it, the modules that serve it,
    its paths on the main port, and its own listeners (name and default port)."""

    document: str
    name: str
    modules: tuple[str, ...]
    paths: tuple[str, ...]
    listeners: tuple[tuple[str, int], ...] = ()


ORIGINAL_APIS: tuple[OriginalApi, ...] = (
    OriginalApi(
        "ByteTrack HTTP server",
        "tracking API",
        ("transports.box_tracking", "transports.rest_v1", "transports.box_requests"),
        ("/", "/v1/sessions"),
    ),
    OriginalApi(
        "people-counter WebSocket API",
        "live people counter",
        ("people", "transports.people_ws"),
        ("/ws/live",),
        (("people_ws", 8765),),
    ),
    OriginalApi(
        "Flask-SocketIO frames-to-video API",
        "video analysis over Socket.IO",
        ("video_analysis", "transports.video_analysis_socketio", "transports.video_analysis_http"),
        ("/socket.io", "/get_session_id", "/options", "/batch"),
    ),
    OriginalApi(
        "OverTrack plugin rig",
        "frame server for plugins",
        ("transports.frame_upload", "tools.extract_frames"),
        ("/ (multipart)",),
        (("frames", 5000),),
    ),
    OriginalApi(
        "WebRTC physiological-monitoring backend",
        "WebRTC model broker",
        ("transports.webrtc_signaling", "transports.webrtc_peer", "runtime.model_lanes"),
        ("/webrtc/ws", "/offer"),
        (("webrtc_http", 8083), ("webrtc_ws", 8084)),
    ),
)

COMPAT_PORTS: dict[str, int] = {name: port for api in ORIGINAL_APIS for name, port in api.listeners}
"""Each original API's own listener (``serve --compat``) and its default port."""


def original_env(name: str, default: Any) -> Callable[[], Any]:
    """A default read from the original API's bare environment variable ``name`` when it is set.

    A default, not a value: anything set explicitly beats it, and it is not counted as set
    (``load_settings`` merges only what was set).
    """

    def factory() -> Any:
        return os.environ.get(name, default)

    return factory
