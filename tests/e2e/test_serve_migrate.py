"""``framebroker serve`` on a database of another framebroker: an older one is refused until
told (``--migrate``), a newer one always, each in one line before anything listens."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from framebroker.storage import head

from ..in_process import free_port
from ..storage.legacy_schema import write_version_1
from .server import running_server


def serve_once(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEBROKER_")}
    return subprocess.run(
        [sys.executable, "-m", "framebroker", "serve", "--port", str(free_port()),
         "--data-dir", str(data), *args],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip


def test_an_older_database_is_served_only_with_migrate(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    engine = create_engine(f"sqlite:///{data / 'framebroker.sqlite3'}")
    write_version_1(engine, version=2)
    refused = serve_once(data)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"framebroker: database sqlite:///{data / 'framebroker.sqlite3'} is at schema revision "
        f"0002 (schema version 2, from before Alembic), older than {head()}; back it up, then run "
        "`framebroker db upgrade` (or serve with --migrate)"
    ]
    with running_server(data, "--migrate") as server:
        record = httpx.get(f"{server.url}/v1/sessions/done").json()
        assert record["state"] == "ended"
        # The session the old server left active is ended: its process is gone.
        assert httpx.get(f"{server.url}/v1/sessions/cut").json()["summary"]["reason"] == (
            "server_restarted"
        )
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0042'"))
    engine.dispose()
    newer = serve_once(data, "--migrate")
    assert newer.returncode == 2
    (line,) = newer.stderr.strip().splitlines()
    assert line.endswith(
        f"is at schema revision 0042, newer than {head()} that this framebroker knows; upgrade "
        "framebroker or point database_url at another database"
    )
