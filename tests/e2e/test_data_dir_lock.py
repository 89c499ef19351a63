"""A second `framebroker serve` on a data directory in use leaves the first one's data alone.

The first server runs a `--source` and holds an active REST session. A second one started on
the same data directory (on the same port, and on another one) must refuse in one line before
it opens the store: the first server's session stays active in the store and keeps working,
and nothing of the previous-run recovery runs against it.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx

from framebroker.media.sources import demo_clip

from .server import free_port, running_server


def second_serve(data: Path, port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "framebroker", "serve", "--port", str(port),
         "--data-dir", str(data), "--source", f"demo={demo_clip()}", "--loop"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def stored_session(data: Path, sid: str) -> tuple[str, object]:
    db = sqlite3.connect(f"file:{data / 'framebroker.sqlite3'}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT state, summary FROM sessions WHERE id = ?", (sid,)).fetchone()
    finally:
        db.close()
    assert row is not None, sid
    return row[0], row[1]


def test_a_second_server_on_the_same_data_directory_refuses_before_touching_it(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    with (
        running_server(data, "--source", f"demo={demo_clip()}", "--loop") as first,
        httpx.Client(base_url=first.url, timeout=30) as c,
    ):
        r = c.post("/v1/sessions", json={})
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        assert c.post(
            f"/v1/sessions/{sid}/frames", json={"boxes": [[1, 2, 30, 40, 0.9, 0]]}
        ).is_success
        assert stored_session(data, sid)[0] == "active"
        port = int(first.url.rsplit(":", 1)[1])

        same_port = second_serve(data, port)
        other_port = second_serve(data, free_port())

        # The same port: the listener is tried first.
        assert same_port.returncode == 2, same_port.stderr
        assert same_port.stderr.strip().splitlines() == [
            f"framebroker: --port {port}: cannot listen on 127.0.0.1:{port}: Address already in use"
        ]
        # Another port: the data directory's lock refuses, naming the first server.
        assert other_port.returncode == 2, other_port.stderr
        assert other_port.stderr.strip().splitlines() == [
            f"framebroker: data directory {data} is in use by process {first.proc.pid}"
        ]

        # The first server goes on, and its store still holds its session as active.
        assert stored_session(data, sid) == ("active", None)
        r = c.get(f"/v1/sessions/{sid}")
        assert r.json()["state"] == "active"
        assert c.post(
            f"/v1/sessions/{sid}/frames", json={"boxes": [[1, 2, 30, 40, 0.9, 0]]}
        ).is_success
        assert c.get("/v1/sessions/demo").json()["state"] == "active"
        assert c.get("/readyz").status_code == 200
    log = first.output()
    assert "previous run" not in log, log
