"""Start the real `framebroker serve` on a free loopback port, and always stop it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

from framebroker.config import COMPAT_PORTS

from ..in_process import free_port


def compat_flags(**chosen: int) -> list[str]:
    """``--compat`` with every compatibility listener moved off its seed port: to the port
    given here by name, else to a free one (the seed ports may be taken on a CI machine)."""
    flags = ["--compat"]
    for name in COMPAT_PORTS:
        flags += ["--compat-port", f"{name}={chosen.get(name) or free_port()}"]
    return flags


class RunningServer:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.proc = proc
        self.url = url
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return int(self.proc.returncode)


@contextlib.contextmanager
def running_server(
    data_dir: Path,
    *args: str,
    scheme: str = "http",
    verify: str | bool = False,
    timeout: float = 60,
    command: Sequence[str] = ("serve",),
    program: Sequence[str] = (sys.executable, "-m", "framebroker"),
    cwd: Path | None = None,
) -> Iterator[RunningServer]:
    """``framebroker serve`` (or ``command``) on a free port, run as ``program`` from ``cwd``."""
    port = free_port()
    log = data_dir / f"server-{port}.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEBROKER_")}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                *program,
                *command,
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
                *args,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
        )
    server = RunningServer(proc, f"{scheme}://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{server.output()}")
            try:
                if httpx.get(f"{server.url}/healthz", verify=verify, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not start in {timeout}s:\n{server.output()}")
            time.sleep(0.1)
        yield server
    finally:
        server.stop()
