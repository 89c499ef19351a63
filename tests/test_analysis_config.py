"""The seed-002 settings section (``analysis``): the seed's names, env fallbacks, checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from framebroker.config import load_settings
from framebroker.errors import ConfigError

SEED_NAMES = (
    "SECRET_KEY",
    "ALLOWED_SESSION_IDS",
    "MAX_BUFFER_SIZE",
    "EMIT_RESULT",
    "SESSION_ID_NAME",
    "GENERATE_SESSION_ID_ON_CONNECT",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("FRAMEBROKER_") or key in SEED_NAMES:
            monkeypatch.delenv(key)


def test_defaults_are_the_seeds() -> None:
    a = load_settings().analysis
    assert a.max_buffer_size == 500 * 1024 * 1024
    assert a.emit_result is True
    assert a.session_id_name == "session_id"
    assert a.generate_session_id_on_connect is False
    assert a.secret_key is None  # a random key per process then
    assert (a.services, a.pipelines, a.window_frames) == ({}, {}, 30)


def test_the_seeds_bare_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_KEY", "s" * 24)
    monkeypatch.setenv("ALLOWED_SESSION_IDS", "cam-1, cam-2")
    monkeypatch.setenv("MAX_BUFFER_SIZE", "1048576")
    monkeypatch.setenv("EMIT_RESULT", "false")
    monkeypatch.setenv("SESSION_ID_NAME", "sid_key")
    monkeypatch.setenv("GENERATE_SESSION_ID_ON_CONNECT", "1")
    a = load_settings().analysis
    assert a.secret_key is not None
    assert a.secret_key.get_secret_value() == "s" * 24
    assert "s" * 24 not in repr(a)
    assert a.allowed_session_ids == ["cam-1", "cam-2"]
    assert (a.max_buffer_size, a.emit_result, a.session_id_name) == (1048576, False, "sid_key")
    assert a.generate_session_id_on_connect is True
    monkeypatch.setenv("ALLOWED_SESSION_IDS", '["a", "b"]')
    assert load_settings().analysis.allowed_session_ids == ["a", "b"]


def test_prefixed_environment_and_files_win_over_bare_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMIT_RESULT", "false")
    monkeypatch.setenv("SESSION_ID_NAME", "bare")
    cfg = tmp_path / "fb.toml"
    cfg.write_text(
        '[analysis]\nSESSION_ID_NAME = "from_file"\nwindow_frames = 8\n'
        '[analysis.services]\ngoal_try = "http://127.0.0.1:9001/goal"\n'
        '[analysis.services.object_detection]\nurl = "http://127.0.0.1:9002/od"\ntimeout_s = 5\n'
        '[analysis.pipelines]\ntracks = ["bytetrack"]\n'
    )
    monkeypatch.setenv("FRAMEBROKER_ANALYSIS__EMIT_RESULT", "true")
    a = load_settings(cfg).analysis
    assert (a.emit_result, a.session_id_name, a.window_frames) == (True, "from_file", 8)
    assert a.services["goal_try"].url == "http://127.0.0.1:9001/goal"
    assert a.services["object_detection"].timeout_s == 5
    assert a.pipelines == {"tracks": ["bytetrack"]}
    monkeypatch.setenv("FRAMEBROKER_ANALYSIS__SERVICES", '{"x": "https://example.org/v"}')
    assert list(load_settings().analysis.services) == ["x"]


@pytest.mark.parametrize(
    ("analysis", "message"),
    [
        ({"secret_key": "your_secret_key"}, "placeholder"),
        ({"secret_key": "short"}, "at least 16"),
        ({"services": {"a": "ftp://h/x"}}, "http:// or https://"),
        ({"services": {"bad name": "http://h"}}, "name"),
        ({"services": {"a": "http://h"}, "pipelines": {"a": ["bytetrack"]}}, "both"),
        ({"pipelines": {"p": []}}, "at least one"),
        ({"pipelines": {"p": [{"every": 2}]}}, "'name'"),
        ({"session_id_name": "EIO"}, "Engine.IO"),
        ({"session_id_name": "a b"}, "query parameter"),
        ({"allowed_session_ids": ["ok", "not ok"]}, "not ok"),
        ({"max_frame_bytes": 64 * 1024 * 1024}, "max_frame_bytes"),
        ({"window_frames": 0}, "window_frames"),
        ({"services": {"a": {"url": "http://h", "retries": -1}}}, "retries"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_bad_settings_stop_the_server_with_a_message(
    analysis: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(analysis=analysis)


def test_dev_mode_accepts_a_placeholder_key() -> None:
    a = load_settings(analysis={"secret_key": "dev", "dev_mode": True}).analysis
    assert a.secret_key is not None
