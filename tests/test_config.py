from __future__ import annotations

import os
from pathlib import Path

import pytest

from framebroker.config import Limits, load_settings
from framebroker.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("FRAMEBROKER_") or key == "WEBSOCKET_STREAM_QUALITY":
            monkeypatch.delenv(key)


def test_defaults_match_the_seed() -> None:
    s = load_settings()
    assert (s.host, s.port, s.max_workers, s.ssl) == ("127.0.0.1", 8000, 4, False)
    assert s.limits == Limits()
    assert s.sqlalchemy_url.startswith("sqlite:///")


def test_file_then_env_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "fb.toml"
    cfg.write_text("port = 9000\nmax_workers = 2\n[limits]\nmax_boxes = 50\nmax_sessions = 7\n")
    s = load_settings(cfg)
    assert (s.port, s.max_workers, s.limits.max_boxes, s.limits.max_sessions) == (9000, 2, 50, 7)
    monkeypatch.setenv("FRAMEBROKER_PORT", "9100")
    monkeypatch.setenv("FRAMEBROKER_LIMITS__MAX_BOXES", "60")
    s = load_settings(cfg)
    assert (s.port, s.limits.max_boxes, s.limits.max_sessions) == (9100, 60, 7)
    s = load_settings(cfg, port=9200, host=None)
    assert s.port == 9200
    assert s.host == "127.0.0.1"


def test_a_framebroker_table_is_accepted(tmp_path: Path) -> None:
    cfg = tmp_path / "pyproject-like.toml"
    cfg.write_text("[framebroker]\nport = 9300\n")
    assert load_settings(cfg).port == 9300


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        ({"port": 70000}, "port"),
        ({"max_workers": 0}, "max_workers"),
        ({"ssl": True}, "ssl needs both"),
        ({"limits": {"max_boxes": 0}}, "limits.max_boxes"),
        ({"limits": {"typo": 1}}, "limits.typo"),
        ({"box_format": "ltrb"}, "box_format"),
    ],
)
def test_bad_values_name_the_setting(flags: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        load_settings(**flags)


def test_missing_ssl_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(ssl=True, ssl_certfile=tmp_path / "c.pem", ssl_keyfile=tmp_path / "k.pem")


def test_unreadable_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("port = = 1")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(bad)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "missing.toml")


def test_bad_env_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAMEBROKER_MAX_WORKERS", "lots")
    with pytest.raises(ConfigError, match="max_workers"):
        load_settings()


def test_the_seed_stream_quality_variable_sets_the_pushed_jpeg_quality(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().live.jpeg_quality == 70
    monkeypatch.setenv("WEBSOCKET_STREAM_QUALITY", "85")
    assert load_settings().live.jpeg_quality == 85
    monkeypatch.setenv("FRAMEBROKER_LIVE__JPEG_QUALITY", "40")  # ours wins over the seed's
    assert load_settings().live.jpeg_quality == 40
    monkeypatch.delenv("FRAMEBROKER_LIVE__JPEG_QUALITY")
    monkeypatch.setenv("WEBSOCKET_STREAM_QUALITY", "101")
    with pytest.raises(ConfigError, match="jpeg_quality: Input should be less than or equal"):
        load_settings()


def test_client_limits_default_to_what_changes_nothing_and_are_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limits = load_settings().limits
    assert (limits.max_sessions_per_client, limits.max_fps_per_session) == (256, 0.0)
    assert limits.max_ws_message_bytes == 16 * 1024 * 1024  # uvicorn's own default
    monkeypatch.setenv("FRAMEBROKER_LIMITS__MAX_FPS_PER_SESSION", "30")
    assert load_settings().limits.max_fps_per_session == 30
    for name, bad in (
        ("max_fps_per_session", -1),
        ("max_sessions_per_client", -1),
        ("max_ws_message_bytes", 100),
    ):
        with pytest.raises(ConfigError, match=f"limits.{name}"):
            load_settings(limits={name: bad})


def test_workers_are_a_count_or_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().worker_count is None
    monkeypatch.setenv("FRAMEBROKER_WORKERS", "3")
    assert load_settings().worker_count == 3
    monkeypatch.setenv("FRAMEBROKER_WORKERS", "auto")
    assert load_settings().worker_count == len(os.sched_getaffinity(0))
    with pytest.raises(ConfigError, match="workers"):
        load_settings(workers=0)
