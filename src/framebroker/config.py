"""Configuration: defaults < TOML file < ``FRAMEBROKER_*`` environment < command-line flags.

Everything is validated when the server starts, so a bad value stops it with a message that
names the setting, rather than surfacing later as a 500. Every limit lives in :class:`Limits`.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .errors import ConfigError

__all__ = [
    "COMPAT_PORTS",
    "Limits",
    "LiveSettings",
    "PeopleCounterSettings",
    "Settings",
    "TrackerSettings",
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
    session_idle_timeout_s: float = Field(
        300.0, gt=0, description="a session with no frame for this long is ended"
    )
    max_pending_frames: int = Field(
        64, ge=1, description="frames queued per session before new ones are refused"
    )
    bus_queue: int = Field(64, ge=1, description="messages kept per slow subscriber")


class TrackerSettings(BaseModel):
    """ByteTrack defaults for new sessions (the reference demo's values)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    track_thresh: float = Field(0.5, gt=0, lt=1)
    match_thresh: float = Field(0.8, gt=0, le=1)
    track_buffer: int = Field(30, ge=1)
    frame_rate: float = Field(30.0, gt=0)


class PeopleCounterSettings(BaseModel):
    """The people counter run on ``--source`` feeds (seed 001)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timezone: str = Field("UTC", description="IANA zone for the daily reset and timestamps")
    lines: list[dict[str, Any]] | None = Field(
        None,
        description='counting lines {"name", "start": [x, y], "end": [x, y], "in": "left"}; '
        "default: a horizontal line through the middle, in = below",
    )
    min_frames: int = Field(3, ge=1, description="frames on the new side before a crossing counts")
    detector: str = Field("nanodet-g", description="bundled model name or a path to an ONNX file")
    event_window_s: float = Field(60.0, gt=0)
    event_threshold: int = Field(10, ge=1, description="count_in within the window that starts one")
    event_cooldown_s: float = Field(30.0, ge=0)
    faces: bool = Field(True, description="save the best face crop of each person")
    max_faces: int = Field(10_000, ge=1)
    face_retention_days: int = Field(30, ge=1)

    @model_validator(mode="after")
    def _known_zone(self) -> PeopleCounterSettings:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone: unknown IANA time zone {self.timezone!r}") from None
        return self


class LiveSettings(BaseModel):
    """The WebSocket push of seed 001."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    jpeg_quality: int = Field(
        70, ge=1, le=100, description="quality of pushed frames (WEBSOCKET_STREAM_QUALITY)"
    )
    max_fps: float = Field(15.0, ge=0, description="frames pushed per second at most; 0: all")
    stats_interval_s: float = Field(0.5, gt=0)
    client_queue: int = Field(8, ge=1, description="frames kept for a slow client")
    send_timeout_s: float = Field(10.0, gt=0, description="a client not reading is dropped")


COMPAT_PORTS = {"people_ws": 8765}
"""Each seed's own listener (``serve --compat``); ``--compat-port NAME=PORT`` moves one."""


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
    data_dir: Path = Path("data")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default: SQLite file in data_dir"
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    box_format: Literal["xyxy", "xywh", "cxcywh"] = "xywh"
    jpeg_quality: int = Field(90, ge=1, le=100)
    pipeline: list[str] = Field(default_factory=lambda: ["bytetrack"])
    limits: Limits = Field(default_factory=Limits)
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
    compat: bool = Field(False, description="also open each seed's own listener")
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

    @model_validator(mode="after")
    def _compat_names(self) -> Settings:
        unknown = sorted(set(self.compat_ports) - set(COMPAT_PORTS))
        if unknown:
            raise ValueError(
                f"compat_ports: unknown listener(s) {unknown}; known: {sorted(COMPAT_PORTS)}"
            )
        return self

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
