"""The command line: flags become settings (serving itself is tested end to end)."""

from __future__ import annotations

from pathlib import Path

import pytest

from framebroker.cli import build_parser, main, settings_from_args
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


def test_db_current_and_upgrade(
    empty_database: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from sqlalchemy import create_engine

    from framebroker.storage import database_url, head

    from .storage.legacy_schema import write_version_1

    flags = ["--database-url", empty_database, "--data-dir", str(tmp_path / "data")]
    assert main(["db", "current", *flags]) == 0
    assert capsys.readouterr().out.endswith(f": empty (made at {head()} when the server starts)\n")
    (tmp_path / "data").mkdir(exist_ok=True)
    engine = create_engine(database_url(empty_database))
    write_version_1(engine)
    engine.dispose()
    assert main(["db", "current", *flags]) == 0
    out = capsys.readouterr().out
    assert out.endswith(
        f": 0001 (schema version 1, from before Alembic) (older than {head()}: run `framebroker "
        "db upgrade`)\n"
    ), out
    assert main(["db", "upgrade", *flags]) == 0
    assert capsys.readouterr().out.endswith(
        f": upgraded from 0001 (schema version 1, from before Alembic) to {head()}\n"
    )
    assert main(["db", "current", *flags]) == 0
    assert capsys.readouterr().out.endswith(f": {head()} (the newest)\n")


def test_db_names_an_unreachable_database_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from .in_process import free_port

    url = f"postgresql://someone:secret@127.0.0.1:{free_port()}/nothing"
    assert main(["db", "current", "--database-url", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("framebroker: cannot reach database postgresql+psycopg://someone:***@")
    assert "secret" not in err
    assert err.count("\n") == 1


def test_workers_take_a_count_or_auto() -> None:
    assert settings_for("serve").worker_count is None  # type: ignore[attr-defined]
    assert settings_for("serve", "--workers", "3").worker_count == 3  # type: ignore[attr-defined]
    auto = settings_for("serve", "--workers", "auto")
    assert auto.workers == "auto"  # type: ignore[attr-defined]
    assert auto.worker_count >= 1  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", ["0", "-1", "two", "257"])
def test_a_bad_worker_count_is_a_usage_error(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["serve", "--workers", value])
    assert exited.value.code == 2
    assert "expected a number of processes from 1 to 256, or auto" in capsys.readouterr().err


def test_workers_without_redis_server_refuse_to_start_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from framebroker.server import private_redis

    monkeypatch.setenv("PATH", "")
    monkeypatch.setattr(private_redis, "_FALLBACKS", ())
    argv = ["serve", "--workers", "2", "--port", "0", "--data-dir", str(tmp_path / "data")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "install it (apt-get install redis-server) or pass --cluster" in err
    assert not (tmp_path / "data").exists()  # refused before anything was made
