"""Seed 004's serve flags and settings: MODELS, --websocket-only, --record-to, TLS, -v."""

from __future__ import annotations

from pathlib import Path

import pytest

from framebroker.cli import build_parser, settings_from_args
from framebroker.config import COMPAT_PORTS, Settings, load_settings
from framebroker.errors import ConfigError


def settings_for(*argv: str) -> Settings:
    return settings_from_args(build_parser().parse_args(list(argv)))


def test_model_flags_are_the_models_list_in_order(tmp_path: Path) -> None:
    s = settings_for(
        "serve",
        "--model",
        "pkg.a:First",
        "--model",
        "heart_rate",
        "--websocket-only",
        "--record-to",
        str(tmp_path),
        "-v",
    )
    assert s.webrtc.models == ["pkg.a:First", "heart_rate"]
    assert s.webrtc.websocket_only is True
    assert s.webrtc.record_to == tmp_path
    assert s.log_level == "debug"


def test_defaults_run_the_heart_rate_model_with_http_signaling() -> None:
    s = settings_for("serve")
    assert s.webrtc.models == ["heart_rate"]
    assert s.webrtc.websocket_only is False
    assert s.webrtc.record_to is None
    assert s.log_level == "info"


def test_the_seed_cert_and_key_flags_turn_tls_on(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("y")
    s = settings_for("serve", "--cert-file", str(cert), "--key-file", str(key))
    assert (s.ssl, s.ssl_certfile, s.ssl_keyfile) == (True, cert, key)
    with pytest.raises(ConfigError, match="ssl_keyfile"):
        settings_for("serve", "--cert-file", str(cert))


def test_the_seed_listeners_can_be_moved() -> None:
    assert COMPAT_PORTS["webrtc_http"] == 8083
    assert COMPAT_PORTS["webrtc_ws"] == 8084
    s = settings_for("serve", "--compat", "--compat-port", "webrtc_ws=9084")
    assert s.compat_ports["webrtc_ws"] == 9084
    assert s.compat_ports["webrtc_http"] == 8083


def test_a_config_file_sets_the_models_and_ice_servers(tmp_path: Path) -> None:
    config = tmp_path / "f.toml"
    config.write_text(
        '[webrtc]\nmodels = ["a:B", {name = "c:D", every = 2}]\n'
        'ice_servers = [{urls = "stun:stun.example.org"}]\nend_timeout_s = 1.5\n'
    )
    s = load_settings(config)
    assert s.webrtc.models == ["a:B", {"name": "c:D", "every": 2}]
    assert s.webrtc.ice_servers == [{"urls": "stun:stun.example.org"}]
    assert s.webrtc.end_timeout_s == 1.5


@pytest.mark.parametrize(
    ("webrtc", "message"),
    [
        ({"models": [{"every": 2}]}, "needs a string 'name'"),
        ({"ice_servers": [{"urls": "http://x"}]}, "stun:/turn:"),
        ({"ice_servers": [{"urls": []}]}, "stun:/turn:"),
        ({"ice_servers": [{"urls": "stun:x", "secret": 1}]}, "unknown keys"),
        ({"frame_timeout_s": 0}, "frame_timeout_s"),
        ({"max_connections": 0}, "max_connections"),
    ],
)
def test_bad_webrtc_settings_are_refused_by_name(webrtc: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(webrtc=webrtc)
