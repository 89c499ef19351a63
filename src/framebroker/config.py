"""Configuration: defaults < TOML file < ``FRAMEBROKER_*`` environment < command-line flags.

Everything is validated when the server starts, so a bad value stops it with a message that
names the setting, rather than surfacing later as a 500. Every limit lives in :class:`Limits`.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .compat import COMPAT_PORTS, original_env
from .errors import ConfigError
from .people.config import LiveSettings, PeopleCounterSettings

__all__ = [
    "COMPAT_PORTS",
    "AnalysisServiceSettings",
    "AnalysisSettings",
    "AuthSettings",
    "ClusterSettings",
    "FramesSettings",
    "Limits",
    "LiveSettings",
    "PeopleCounterSettings",
    "Settings",
    "TrackerSettings",
    "WebRTCSettings",
    "load_settings",
]

MiB = 1024 * 1024


class Limits(BaseModel):
    """Every bound the server enforces, with a safe default for a small machine."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_body_bytes: int = Field(32 * MiB, ge=1024, description="largest request body")
    max_boxes: int = Field(10_000, ge=1, description="boxes per frame")
    max_image_pixels: int = Field(
        8192 * 8192, ge=1, description="width x height of one image, checked from its header"
    )
    max_sessions: int = Field(1024, ge=1, description="live sessions on this server")
    max_sessions_per_client: int = Field(
        256,
        ge=0,
        description="sessions one client address holds at once, over every transport; "
        "0: no limit. Sessions the server feeds itself (--source) are not counted",
    )
    max_fps_per_session: float = Field(
        0.0,
        ge=0,
        description="frames per second a client's session may send (a burst of one "
        "second's worth is allowed); 0: no limit",
    )
    max_ws_message_bytes: int = Field(
        16 * MiB,
        ge=1024,
        description="largest WebSocket message on any socket; a bigger one closes the "
        "socket with 1009",
    )
    session_idle_timeout_s: float = Field(
        300.0, gt=0, description="a session with no frame for this long is ended"
    )
    max_pending_frames: int = Field(
        64, ge=1, description="frames queued per session before new ones are refused"
    )
    processor_timeout_s: float = Field(
        10.0,
        gt=0,
        description="longest one processor call (setup included) may take on a frame; past "
        "it the frame's client gets 504 and the session refuses frames until the call returns "
        "or the session is ended; a WebRTC model that overruns it is reported and gets the "
        "newest frame once it returns",
    )
    bus_queue: int = Field(64, ge=1, description="messages kept per slow subscriber")
    max_form_parts: int = Field(16, ge=1, description="parts of one multipart/form-data body")
    max_part_header_bytes: int = Field(
        16 * 1024, ge=256, description="header block of one multipart part"
    )
    max_connections: int = Field(
        1000,
        ge=1,
        description="open HTTP and WebSocket connections per listener (the main port and "
        "each compat listener count apart); a request on one more is answered 503",
    )
    max_header_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="request line and headers of one request; over it: 431 and the "
        "connection is closed (a WebSocket handshake's lines are also capped at 8 KiB each)",
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="a request's headers must be complete within this, counted from the "
        "connection's opening or, on a kept-alive connection, from the previous response; "
        "else 408 and the connection is closed",
    )
    body_timeout_s: float = Field(
        120.0,
        gt=0,
        description="a request's whole body must arrive within this after its headers (a "
        "deadline, not a rate: raise it for big uploads over slow links); else 408, or the "
        "connection is closed if the answer had begun",
    )
    idle_timeout_s: float = Field(
        5.0,
        gt=0,
        description="a connection with no request under way (fresh or kept alive) is closed "
        "after this; WebSockets, once open, are not subject to any of these timeouts",
    )
    db_pool_size: int = Field(
        5, ge=1, le=1000, description="database connections each server process keeps open"
    )
    db_pool_overflow: int = Field(
        5,
        ge=0,
        le=1000,
        description="more connections a process may open under load, closed when returned",
    )
    db_timeout_s: float = Field(
        5.0,
        gt=0,
        le=300,
        description="longest wait for a database connection, from the pool or from the "
        "database server; past it the request is answered 503 store_unavailable",
    )


class TrackerSettings(BaseModel):
    """ByteTrack defaults for new sessions (the reference demo's values)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    track_thresh: float = Field(0.5, gt=0, lt=1)
    match_thresh: float = Field(0.8, gt=0, le=1)
    track_buffer: int = Field(30, ge=1)
    frame_rate: float = Field(30.0, gt=0)


class AuthSettings(BaseModel):
    """Who may use the server: API keys by name, checked on every transport."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="name = key; empty: no key is asked for (a warning is printed when the "
        "server then listens beyond loopback)",
    )

    allowed_origins: list[str] = Field(
        default_factory=list,
        description="web pages (scheme://host[:port]) besides the server's own that may open "
        "its WebSockets; '*': any",
    )

    @field_validator("api_keys", mode="after")
    @classmethod
    def _usable_keys(cls, keys: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, key in keys.items():
            if not name.strip():
                raise ValueError("every key needs a name")
            if len(key.get_secret_value()) < 16:
                raise ValueError(f"key {name!r} is shorter than 16 characters")
        return keys


class FramesSettings(BaseModel):
    """The frame server: a multipart ``POST /`` of ``image`` and ``frame``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pipeline: list[str | dict[str, Any]] = Field(
        default_factory=list,
        description="processors run on each posted frame, by name or module:attr, or "
        '{"name": ..., **params} (serve --processor); default: none, the frame is echoed',
    )
    default_width: int = Field(1920, ge=1, description="raw image width when frame has none")
    default_height: int = Field(1080, ge=1, description="raw image height when frame has none")

    @model_validator(mode="after")
    def _named_processors(self) -> FramesSettings:
        for i, spec in enumerate(self.pipeline):
            if isinstance(spec, dict) and not isinstance(spec.get("name"), str):
                raise ValueError(f"pipeline[{i}]: a processor table needs a string 'name'")
        return self


class AnalysisServiceSettings(BaseModel):
    """One HTTP analysis service of video analysis: the window's MP4 is POSTed to ``url``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(description="http:// or https:// URL the video is POSTed to")
    timeout_s: float = Field(30.0, gt=0, description="whole time allowed, retries included")
    retries: int = Field(2, ge=0, le=10, description="more tries after a refused connection or 5xx")
    field: str = Field("file", min_length=1, description="multipart field holding the video")

    @model_validator(mode="after")
    def _http_url(self) -> AnalysisServiceSettings:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"url: expected an http:// or https:// URL, got {self.url!r}")
        return self


_ANALYSIS_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ALLOWED_SESSION_ID = re.compile(r"[A-Za-z0-9._~-]{1,64}")
_QUERY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# Engine.IO's own query parameters; a session id under one of these names would be lost.
_ENGINEIO_PARAMS = frozenset({"EIO", "transport", "t", "sid", "j", "b64"})
_PLACEHOLDER_KEYS = frozenset(
    {"", "secret", "secret_key", "secret-key", "your_secret_key", "your-secret-key",
     "your secret key", "changeme", "change-me", "change_me", "dev", "development", "test"}
)  # fmt: skip
_ORIGINAL_ENV_NAMES = (
    "SECRET_KEY",
    "ALLOWED_SESSION_IDS",
    "MAX_BUFFER_SIZE",
    "EMIT_RESULT",
    "SESSION_ID_NAME",
    "GENERATE_SESSION_ID_ON_CONNECT",
)


class AnalysisSettings(BaseModel):
    """Video analysis: Socket.IO frame sessions, windows of frames encoded to MP4, and the fan-out
    of each window (or ``POST /batch`` upload) to analysis services and in-process pipelines.

    The original API's bare environment names (``SECRET_KEY``, ``ALLOWED_SESSION_IDS``,
    ``MAX_BUFFER_SIZE``, ``EMIT_RESULT``, ``SESSION_ID_NAME``,
    ``GENERATE_SESSION_ID_ON_CONNECT``) are read as defaults: any other source that sets the
    same setting (``FRAMEBROKER_ANALYSIS__...``, the config file, a flag) wins. In a config
    file the original API's upper-case spellings are accepted too.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    secret_key: SecretStr | None = Field(
        default_factory=original_env("SECRET_KEY", None),
        validate_default=True,
        description="signs the session ids /get_session_id hands out; unset: a random key "
        "per process (ids do not survive a restart); a placeholder is refused unless dev_mode",
    )
    dev_mode: bool = Field(False, description="accept a placeholder or short secret_key")
    allowed_session_ids: list[str] = Field(
        default_factory=original_env("ALLOWED_SESSION_IDS", ()),
        validate_default=True,
        description="ids a client may connect with besides those handed out; each is "
        "used up when its client disconnects (comma-separated or a JSON list in the env)",
    )
    max_buffer_size: int = Field(
        default_factory=original_env("MAX_BUFFER_SIZE", 500 * MiB),
        validate_default=True,
        ge=1024,
        description="largest POST /batch upload, in bytes",
    )
    emit_result: bool = Field(
        default_factory=original_env("EMIT_RESULT", True),
        validate_default=True,
        description="emit each window's merged answers to its client as 'result'",
    )
    session_id_name: str = Field(
        default_factory=original_env("SESSION_ID_NAME", "session_id"),
        validate_default=True,
        description="query parameter of the Socket.IO connection that carries the session id",
    )
    generate_session_id_on_connect: bool = Field(
        default_factory=original_env("GENERATE_SESSION_ID_ON_CONNECT", False),
        validate_default=True,
        description="make an id for a client that connects without a known one, instead of "
        "refusing it; the id is sent to it in a 'session' event",
    )
    services: dict[str, AnalysisServiceSettings] = Field(
        default_factory=dict, description="HTTP analysis services: name = URL or a table"
    )
    pipelines: dict[str, list[str | dict[str, Any]]] = Field(
        default_factory=dict,
        description="in-process pipelines run on each window's frames: name = processors",
    )
    cors_allowed_origins: list[str] = Field(
        default_factory=list,
        description="origins of web pages allowed to open a Socket.IO connection ('*': any); "
        "none: only pages from this server (clients outside a browser send no origin)",
    )
    window_frames: int = Field(30, ge=1, le=10_000, description="frames per video window")
    window_seconds: float = Field(
        0.0, ge=0, description="also close a window this long after its first frame; 0: never"
    )
    video_fps: float = Field(30.0, gt=0, le=240, description="frame rate written in the MP4")
    video_preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] = (
        "ultrafast"
    )
    video_crf: int = Field(23, ge=0, le=51, description="H.264 quality: lower is better")
    max_frame_bytes: int = Field(
        8 * MiB,
        ge=1024,
        le=11 * MiB,
        description="largest image in one 'process' event (at most 11 MiB: its base64 must "
        "fit in one 16 MiB WebSocket message)",
    )
    max_inflight_events: int = Field(
        8, ge=1, le=1024, description="'process' events of one client being handled at once"
    )
    max_windows_in_flight: int = Field(
        2, ge=1, le=64, description="windows of one session being analysed at once"
    )
    max_window_bytes: int = Field(
        64 * MiB, ge=MiB, description="bytes one open window may hold (video and frames)"
    )
    max_concurrent_requests: int = Field(
        16, ge=1, le=1024, description="requests to analysis services in flight, server-wide"
    )
    max_answer_bytes: int = Field(
        4 * MiB, ge=1024, description="largest answer read from an analysis service"
    )
    reconnect_grace_s: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="how long a session waits for its client to reconnect with the same id "
        "(python-socketio reconnects by itself) before it ends and its id is used up; 0: at "
        "once, as the original API does",
    )
    issued_id_ttl_s: float = Field(
        600.0, gt=0, description="a handed-out session id must connect within this time"
    )
    max_issued_ids: int = Field(
        100_000, ge=1, description="handed-out ids remembered (unused or used up) at once"
    )
    batch_max_frames: int = Field(
        9000, ge=1, description="frames of one /batch upload run through in-process pipelines"
    )
    max_concurrent_batches: int = Field(
        4, ge=1, le=256, description="POST /batch uploads handled at once; more get 503"
    )

    @model_validator(mode="before")
    @classmethod
    def _original_spellings(cls, data: Any) -> Any:
        # A config file may use the original API's names; the usual spelling, when both are there,
        # came from the environment or a flag, and wins.
        if not isinstance(data, dict) or not any(name in data for name in _ORIGINAL_ENV_NAMES):
            return data
        out = dict(data)
        for name in _ORIGINAL_ENV_NAMES:
            if name in out:
                value = out.pop(name)
                out.setdefault(name.lower(), value)
        return out

    @field_validator("allowed_session_ids", mode="before")
    @classmethod
    def _id_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("services", mode="before")
    @classmethod
    def _bare_urls(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = json.loads(value)
        if isinstance(value, dict):
            return {k: {"url": v} if isinstance(v, str) else v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _consistent(self) -> AnalysisSettings:
        key = self.secret_key.get_secret_value() if self.secret_key is not None else None
        if key is not None and not self.dev_mode:
            if key.strip().lower() in _PLACEHOLDER_KEYS:
                raise ValueError(
                    "analysis.secret_key (SECRET_KEY) is a placeholder; set it to a random "
                    "value (python -c 'import secrets; print(secrets.token_urlsafe(32))'), "
                    "or set dev_mode"
                )
            if len(key) < 16:
                raise ValueError(
                    f"analysis.secret_key (SECRET_KEY) is {len(key)} characters; expected at "
                    "least 16 outside dev_mode"
                )
        for bad in self.allowed_session_ids:
            if not _ALLOWED_SESSION_ID.fullmatch(bad):
                raise ValueError(
                    f"allowed_session_ids: {bad!r} is not 1-64 characters of A-Z a-z 0-9 . _ ~ -"
                )
        if not _QUERY_NAME.fullmatch(self.session_id_name):
            raise ValueError(
                f"session_id_name: expected a query parameter name, got {self.session_id_name!r}"
            )
        if self.session_id_name in _ENGINEIO_PARAMS:
            raise ValueError(
                f"session_id_name: {self.session_id_name!r} is Engine.IO's own query parameter"
            )
        for kind, names in (("services", self.services), ("pipelines", self.pipelines)):
            for name in names:
                if not _ANALYSIS_NAME.fullmatch(name):
                    raise ValueError(f"{kind}: name {name!r} is not 1-64 of A-Z a-z 0-9 _ -")
        both = sorted(set(self.services) & set(self.pipelines))
        if both:
            raise ValueError(f"{both} named both as a service and as a pipeline")
        for name, specs in self.pipelines.items():
            if not specs:
                raise ValueError(f"pipelines.{name}: expected at least one processor")
            for i, spec in enumerate(specs):
                if isinstance(spec, dict) and not isinstance(spec.get("name"), str):
                    raise ValueError(f"pipelines.{name}[{i}]: a processor table needs a 'name'")
        return self


_HEART_RATE = "heart_rate"  # the built-in rPPG model (entry point)


class WebRTCSettings(BaseModel):
    """The WebRTC model broker: a WebRTC peer streams its camera; each connection is a session
    whose frames feed ``models``, each model in its own lane (see
    :mod:`framebroker.runtime.model_lanes`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    models: list[str | dict[str, Any]] = Field(
        default_factory=lambda: list[str | dict[str, Any]]([_HEART_RATE]),
        description="the original API's MODELS: processors by name or module:attr, or "
        '{"name": ..., **params}, in merge order (later keys win); serve --model',
    )
    websocket_only: bool = Field(False, description="no HTTP POST /offer signaling")
    record_to: Path | None = Field(None, description="write each incoming stream to DIR/ID.mp4")
    ice_servers: list[dict[str, Any]] = Field(
        default_factory=list,
        description='ICE servers for the server and for clients that ask ({"urls": ..., '
        '"username": ..., "credential": ...}); default none: host candidates only',
    )
    max_model_failures: int = Field(
        3, ge=0, description="failures in a row (errors, timeouts) that disable a model; 0: never"
    )
    end_timeout_s: float = Field(10.0, gt=0, description="wait for frames in progress at the end")
    connect_timeout_s: float = Field(
        15.0, gt=0, description="from the answer to the first video frame (ICE, DTLS, keyframe)"
    )
    media_timeout_s: float = Field(
        10.0, gt=0, description="a connection that sends no frame for this long is ended"
    )
    max_connections: int = Field(32, ge=1, description="peer connections open at once")
    max_message_bytes: int = Field(
        256 * 1024, ge=1024, description="largest signaling message or offer body"
    )
    client_queue: int = Field(64, ge=1, description="predictions kept for a slow client")

    @field_validator("ice_servers", mode="after")
    @classmethod
    def _ice_urls(cls, servers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, server in enumerate(servers):
            urls = server.get("urls")
            listed = [urls] if isinstance(urls, str) else urls
            schemes = ("stun:", "stuns:", "turn:", "turns:")
            if not isinstance(listed, list) or not listed:
                listed = [None]
            if not all(isinstance(u, str) and u.startswith(schemes) for u in listed):
                raise ValueError(
                    f"ice_servers[{i}]: urls must be stun:/turn: URLs, got {server.get('urls')!r}"
                )
            unknown = sorted(set(server) - {"urls", "username", "credential"})
            if unknown:
                raise ValueError(f"ice_servers[{i}]: unknown keys {unknown}")
        return servers

    @model_validator(mode="before")
    @classmethod
    def _one_time_limit(cls, data: Any) -> Any:
        if isinstance(data, dict) and "frame_timeout_s" in data:
            raise ValueError(
                "webrtc.frame_timeout_s is gone: every processor, WebRTC models included, "
                "now has limits.processor_timeout_s on a frame"
            )
        return data

    @model_validator(mode="after")
    def _named_models(self) -> WebRTCSettings:
        for i, spec in enumerate(self.models):
            if isinstance(spec, dict) and not isinstance(spec.get("name"), str):
                raise ValueError(f"models[{i}]: a model table needs a string 'name'")
        return self


_REDIS_SCHEMES = ("redis", "rediss", "unix")


class ClusterSettings(BaseModel):
    """Joining a cluster of nodes that share one Redis (see ``docs/cluster.md``). Without
    ``url`` the server is one process with its in-process bus, as always."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str | None = Field(
        None,
        description="redis://HOST:PORT/DB of the cluster's Redis (serve --cluster); unset: "
        "no cluster",
    )
    name: str = Field(
        "framebroker",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="the cluster's name: several clusters may share one Redis",
    )
    ttl_s: float = Field(
        5.0,
        ge=0.3,
        le=300,
        description="a node's lease: how long after a node dies its sessions can be taken "
        "over by another (renewed every ttl_s / 3)",
    )
    source_ttl_s: float = Field(
        3.0,
        ge=0.3,
        le=300,
        description="a --source's lease: the node that holds it runs the source; how long "
        "after that node dies another node configured with the same source takes it over "
        "(renewed every source_ttl_s / 3)",
    )
    address: str | None = Field(
        None,
        description="the address other nodes reach this one at (its relay port); default: "
        "host, or this machine's name when host is 0.0.0.0 or ::",
    )
    relay_host: str | None = Field(
        None,
        description="address the relay listens on; default: host (serve --workers without "
        "--cluster: 127.0.0.1, the workers' relays being for each other only)",
    )
    relay_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="port of the internal endpoint other nodes relay requests on; 0: any "
        "free port (advertised in the directory)",
    )
    checkpoint_every_s: float = Field(
        1.0,
        gt=0,
        le=3600,
        description="a session that processed frames since its last snapshot is snapshotted "
        "this often, so a node that dies loses at most this much of its sessions' state",
    )
    relay_timeout_s: float = Field(
        30.0,
        gt=0,
        le=600,
        description="longest a request relayed to the session's owner may take",
    )

    @field_validator("url", mode="after")
    @classmethod
    def _redis_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in _REDIS_SCHEMES or not (parts.netloc or parts.path):
            raise ValueError(f"expected redis://HOST:PORT/DB, got {url!r}")
        return url


class Settings(BaseSettings):
    """Server settings. Nested values in the environment use ``__``:
    ``FRAMEBROKER_LIMITS__MAX_BOXES=500``."""

    model_config = SettingsConfigDict(
        env_prefix="FRAMEBROKER_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    ssl: bool = False
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    max_workers: int = Field(4, ge=1, le=256)
    workers: int | Literal["auto"] | None = Field(
        None,
        description="server processes under one supervisor, sharing the listening ports "
        "(serve --workers; 'auto': one per core); unset: one process, as always. Each "
        "worker is a node of a cluster (docs/cluster.md)",
    )
    inference_threads: int = Field(
        1,
        ge=1,
        le=64,
        description="threads per detector run; runs go side by side, one per core for each "
        "of their threads (1: most frames per second; the cores' count: least latency for "
        "one frame at a time)",
    )
    parallel_frames: int = Field(
        2,
        ge=1,
        le=16,
        description="frames of one stream a detector works on at once",
    )
    processor_memory_sample_every: int = Field(
        16,
        ge=0,
        description="measure resident-memory growth across every Nth call of each processor "
        "for /metrics (framebroker_processor_memory_growth_bytes); 0: never",
    )
    data_dir: Path = Path("data")
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL (sqlite:///..., postgresql://user@host/db); default: "
        "SQLite file in data_dir",
    )
    migrate: bool = Field(
        False,
        description="upgrade a database made by an older framebroker before serving "
        "(else the server refuses it and says how)",
    )
    node_id: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="this server to a shared database: its sessions' owner; default: an id "
        "made at the data directory's first start and kept in data_dir/node_id. Two servers "
        "on one database need different ones",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    event_loop: Literal["auto", "asyncio", "uvloop"] = Field(
        "auto", description="auto: uvloop where it is installed, else asyncio's own"
    )
    box_format: Literal["xyxy", "xywh", "cxcywh"] = "xywh"
    jpeg_quality: int = Field(90, ge=1, le=100)
    pipeline: list[str] = Field(default_factory=lambda: ["bytetrack"])
    limits: Limits = Field(default_factory=Limits)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    tracker: TrackerSettings = Field(default_factory=TrackerSettings)
    sources: list[str] = Field(
        default_factory=list, description="video sources to run the people counter on"
    )
    source_realtime: bool | None = Field(
        None, description="pace files at their frame rate (default: yes for files)"
    )
    loop: bool = Field(False, description="start files over at their end")
    people: PeopleCounterSettings = Field(default_factory=PeopleCounterSettings)
    live: LiveSettings = Field(default_factory=LiveSettings)
    frames: FramesSettings = Field(default_factory=FramesSettings)
    analysis: AnalysisSettings = Field(default_factory=AnalysisSettings)
    webrtc: WebRTCSettings = Field(default_factory=WebRTCSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    compat: bool = Field(False, description="also open each original API's own listener")
    compat_ports: dict[str, int] = Field(default_factory=lambda: dict(COMPAT_PORTS))

    @model_validator(mode="after")
    def _ssl_files(self) -> Settings:
        if self.ssl and (self.ssl_certfile is None or self.ssl_keyfile is None):
            raise ValueError("ssl needs both ssl_certfile and ssl_keyfile")
        for name in ("ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if self.ssl and path is not None and not Path(path).is_file():
                raise ValueError(f"{name}: no such file {path}")
        return self

    @field_validator("workers", mode="after")
    @classmethod
    def _worker_count(cls, workers: int | str | None) -> int | str | None:
        if isinstance(workers, int) and not 1 <= workers <= 256:
            raise ValueError(f"expected 1 to 256 or 'auto', got {workers}")
        return workers

    @property
    def worker_count(self) -> int | None:
        """How many worker processes to run (``auto``: the cores this process may use);
        ``None``: no supervisor, one process."""
        if self.workers is None or isinstance(self.workers, int):
            return self.workers
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)

    @field_validator("compat_ports", mode="after")
    @classmethod
    def _compat_names(cls, ports: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(ports) - set(COMPAT_PORTS))
        if unknown:
            raise ValueError(f"unknown listener(s) {unknown}; known: {sorted(COMPAT_PORTS)}")
        # Moving one listener keeps the others on their original ports.
        return {**COMPAT_PORTS, **ports}

    @property
    def faces_dir(self) -> Path:
        return self.data_dir / "faces"

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'framebroker.sqlite3').resolve()}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Flags (init) beat the environment; the TOML file is merged in by load_settings
        # underneath both.
        return (init_settings, env_settings)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def load_settings(config_file: Path | None = None, **flags: Any) -> Settings:
    """Build validated settings; raises :class:`ConfigError` naming every bad setting.

    ``flags`` are command-line values; ``None`` means "not given" and is ignored.
    """
    file_values: dict[str, Any] = {}
    if config_file is not None:
        try:
            file_values = tomllib.loads(Path(config_file).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}") from exc
        file_values = file_values.get("framebroker", file_values)
    given = {k: v for k, v in flags.items() if v is not None}
    try:
        # Settings() alone reads only the environment; exclude_unset keeps just what it set.
        env_values = Settings().model_dump(exclude_unset=True)
        return Settings(**_deep_merge(_deep_merge(file_values, env_values), given))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from exc
