"""The command line: flags become settings (serving itself is tested end to end)."""

from __future__ import annotations

import pytest

from framebroker.cli import build_parser, settings_from_args
from framebroker.errors import ConfigError


def settings_for(*argv: str) -> object:
    return settings_from_args(build_parser().parse_args(list(argv)))


def test_processor_flags_become_the_frame_server_pipeline_in_order() -> None:
    settings = settings_for("serve", "--processor", "bytetrack", "--processor", "pkg.mod:Thing")
    assert settings.frames.pipeline == ["bytetrack", "pkg.mod:Thing"]  # type: ignore[attr-defined]


def test_no_processor_flag_keeps_the_configured_pipeline(tmp_path: pytest.TempPathFactory) -> None:
    settings = settings_for("serve")
    assert settings.frames.pipeline == []  # type: ignore[attr-defined]


def test_compat_ports_move_one_listener_and_keep_the_others() -> None:
    settings = settings_for("serve", "--compat", "--compat-port", "frames=5001")
    ports = settings.compat_ports  # type: ignore[attr-defined]
    assert ports["frames"] == 5001
    assert ports["people_ws"] == 8765


def test_an_unknown_compat_listener_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="nope"):
        settings_for("serve", "--compat-port", "nope=1234")


def test_seed_spellings_and_kebab_case_give_the_same_settings() -> None:
    a = settings_for("serve", "--max_workers", "3", "--ssl_certfile", "c.pem")
    b = settings_for("serve", "--max-workers", "3", "--ssl-certfile", "c.pem")
    assert a == b
