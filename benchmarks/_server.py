"""Start `framebroker serve` on a free loopback port for a benchmark, and stop it after."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def framebroker_server(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> Iterator[tuple[str, int]]:
    """Yields (base URL, server pid); ``env`` adds to the environment, whose
    ``FRAMEBROKER_*`` settings are left out."""
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEBROKER_")}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "framebroker",
                "serve",
                "--port",
                str(port),
                "--data-dir",
                data,
                "--log-level",
                "warning",
                *args,
            ],
            env=environ | (env or {}),
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError("server exited during start-up")
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("server did not start")
                time.sleep(0.1)
            yield url, proc.pid
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
