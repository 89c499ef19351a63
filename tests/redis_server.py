"""A real ``redis-server`` for tests and benchmarks: its own process, on a free loopback port,
in a temporary directory, with nothing kept on disk unless asked.

The cluster's promises are about how Redis behaves (``SET NX`` races, keys expiring on the
server's clock, pub/sub dropping a subscriber's connection, streams surviving a slow reader),
so the tests run against the real server, never a fake. It also fails the way a real one
does: :meth:`RedisServer.kill` is ``kill -9``, :meth:`RedisServer.pause` freezes it
(``SIGSTOP``: connections hang rather than being refused, the nastier outage), and
:meth:`RedisServer.restart` brings it back on the same port, empty unless ``persist``.

A missing ``redis-server`` is an error that says how to install it, never a skip: a suite that
quietly skipped the cluster would pass without testing it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["RedisServer", "RedisServerMissing", "redis_server_binary", "running_redis"]

INSTALL_HINT = (
    "install it with `bash scripts/install_redis.sh` (as root: apt-get install redis-server)"
)


class RedisServerMissing(RuntimeError):
    """``redis-server`` is not on ``PATH``."""


def redis_server_binary() -> str:
    """The path of ``redis-server``; raises :class:`RedisServerMissing` with how to get it."""
    found = shutil.which("redis-server")
    if found is None:
        raise RedisServerMissing(f"redis-server is not on PATH: {INSTALL_HINT}")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process bound to 127.0.0.1 (``port`` free if not given).

    ``persist``: keep an append-only file in the directory, so :meth:`restart` finds the data
    again (tests of a Redis that comes back with its state); else nothing is written.
    """

    def __init__(
        self, *, port: int | None = None, persist: bool = False, directory: Path | None = None
    ) -> None:
        self.binary = redis_server_binary()
        self.port = port or _free_port()
        self.persist = persist
        self._own_dir = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="fb-redis-"))
        self.process: subprocess.Popen[bytes] | None = None
        self._paused = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("redis-server is not running")
        return self.process.pid

    def start(self, *, timeout_s: float = 10.0) -> None:
        """Start it and wait until it answers ``PING``; raises ``RuntimeError`` with its log
        if it exits or stays silent for ``timeout_s``."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"redis-server already runs on port {self.port}")
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.persist else "no",
            "--appendfsync", "always",
            "--logfile", "",
            "--daemonize", "no",
            "--databases", "1",
        ]  # fmt: skip
        with open(self.directory / "redis.log", "ab") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout_s
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    f"redis-server did not start on port {self.port}: {self.log()[-2000:]}"
                )
            time.sleep(0.01)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self) -> None:
        """``kill -9``: no shutdown, no save; clients see their connections reset."""
        if self.process is None:
            return
        if self._paused:
            self.resume()
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        """A clean stop (``SIGTERM``), then :meth:`kill` if it lingers."""
        if self.process is None:
            return
        if self._paused:
            self.resume()
        self.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        self.kill()

    def restart(self, *, kill: bool = True) -> None:
        """Stop it (``kill -9`` unless ``kill=False``) and start it again on the same port."""
        if kill:
            self.kill()
        else:
            self.stop()
        self.start()

    def pause(self) -> None:
        """Freeze the process (``SIGSTOP``): it keeps its port and connections but answers
        nothing, like a host that stopped routing."""
        os.kill(self.pid, signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)
        self._paused = False

    def cpu_seconds(self) -> float:
        """User plus system CPU time the server has used (``/proc``), for benchmarks."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)


@contextlib.contextmanager
def running_redis(*, persist: bool = False) -> Iterator[RedisServer]:
    """A started :class:`RedisServer`, killed and its directory removed at the end."""
    server = RedisServer(persist=persist)
    try:
        server.start()
        yield server
    finally:
        server.close()
