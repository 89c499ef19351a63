"""Start-up mistakes stop the real `framebroker serve` with one line naming the option, exit 2,
before it binds a port or writes to its data directory."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ..in_process import free_port

BAD_SIDE = """
[people]
lines = [{name = "door", start = [0, 300], end = [640, 300], in = "up"}]
"""

SECRET = """
[analysis]
secret_key = "a-cluster-secret-of-32-characters!"
"""


def serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "framebroker", "serve", "--port", str(free_port()),
         "--data-dir", str(tmp_path / "data"), *args],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--source", "missing.mp4"], "framebroker: --source missing.mp4: no such file"),
        (["--source", "lobby=missing.mp4"],
         "framebroker: --source lobby=missing.mp4: no such file"),
        (["--source", "notes.txt"], "framebroker: --source notes.txt: not a video file"),
        (["--processor", "nosuch"], "framebroker: --processor nosuch: unknown processor 'nosuch'"),
        (["--processor", "nosuch_mod:Thing"], "framebroker: --processor nosuch_mod:Thing: "
         "cannot import module 'nosuch_mod'"),
        (["--model", "nosuch_mod:Pulse"], "framebroker: --model nosuch_mod:Pulse: "
         "cannot import module 'nosuch_mod'"),
        (["--cert-file", "notes.txt", "--key-file", "notes.txt"],
         "framebroker: --ssl-certfile notes.txt / --ssl-keyfile notes.txt: not a PEM certificate"),
        (["--config", "bad-side.toml"],
         "framebroker: people.lines: lines[0]: line 'door' in side must be 'left' or 'right', "
         "got 'up'"),
        (["--database-url", "nosuchdb://x"], "framebroker: database_url nosuchdb://x: "),
        (["--record-to", "notes.txt/recordings"], "framebroker: --record-to notes.txt/recordings: "
         "cannot make the folder: Not a directory"),
        (["--host", "192.0.2.1"], "framebroker: --host 192.0.2.1: cannot listen on 192.0.2.1:"),
        (["--cluster", "http://127.0.0.1:1/0"],
         "framebroker: invalid configuration: cluster.url: Value error, expected "
         "redis://HOST:PORT/DB, got 'http://127.0.0.1:1/0'"),
        (["--cluster", "redis://127.0.0.1:1/0"], "framebroker: --cluster needs a database every "
         "node shares (--database-url postgresql://...), not sqlite:///"),
        (["--cluster", "redis://127.0.0.1:1/0", "--database-url", "postgresql://u@127.0.0.1:1/d"],
         "framebroker: --cluster needs SECRET_KEY (analysis.secret_key) set to the same value "
         "on every node"),
        (["--cluster", "redis://127.0.0.1:1/0", "--database-url", "postgresql://u@127.0.0.1:1/d",
          "--config", "secret.toml"],
         "framebroker: --cluster redis://127.0.0.1:1/0: its Redis does not answer:"),
    ],
)  # fmt: skip
def test_a_start_up_mistake_is_one_line_naming_the_option(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    (tmp_path / "notes.txt").write_text("not a video, not a certificate\n")
    (tmp_path / "bad-side.toml").write_text(BAD_SIDE)
    (tmp_path / "secret.toml").write_text(
        '[analysis]\nsecret_key = "a-cluster-secret-of-32-chars!!"\n'
    )
    line = one_line(serve(tmp_path, *args))
    assert line.startswith(expected), line
    if "--database-url" not in args or "--cluster" in args:  # the store is opened last
        assert not (tmp_path / "data").exists()


def test_a_port_in_use_is_one_line_naming_the_option(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "framebroker", "serve", "--port", str(port),
             "--data-dir", str(tmp_path / "data")],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert one_line(proc) == (
        f"framebroker: --port {port}: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert not (tmp_path / "data").exists()
