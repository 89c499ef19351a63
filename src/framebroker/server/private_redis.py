"""The private ``redis-server`` of ``serve --workers`` without ``--cluster``: the workers'
cluster on one machine, owned by the supervisor and stopped with it.

It listens on a Unix socket in a temporary directory of its own (mode 0700), with no TCP
port: nothing off the machine and no other user can reach it, and no port has to be found
free. It keeps nothing on disk: the workers re-assert what they hold at their next
heartbeat if it has to be started again (``docs/cluster.md``, failure behaviour).
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
from collections.abc import Callable
from pathlib import Path

from ..errors import ConfigError

__all__ = ["PrivateRedis", "redis_server_binary"]

_FALLBACKS = ("/usr/bin/redis-server", "/usr/sbin/redis-server", "/usr/local/bin/redis-server")


def redis_server_binary() -> str:
    """The path of ``redis-server``; raises :class:`ConfigError` saying what to do."""
    found = shutil.which("redis-server") or next(
        (p for p in _FALLBACKS if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise ConfigError(
            "--workers needs redis-server for the workers to share sessions: install it "
            "(apt-get install redis-server) or pass --cluster redis://HOST:PORT/DB"
        )
    return found


class PrivateRedis:
    """One ``redis-server`` on a Unix socket in a temporary directory; :meth:`start` it,
    :meth:`close` it (stopped, directory removed). ``preexec``: run in the child before it
    execs (the supervisor has it die with its parent), given only while the caller runs
    no other thread."""

    def __init__(self, binary: str, *, preexec: Callable[[], None] | None = None) -> None:
        self.binary = binary
        self.preexec = preexec
        self.directory = Path(tempfile.mkdtemp(prefix="framebroker-redis-"))
        self.socket_path = self.directory / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}?db=0"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, *, timeout_s: float = 10.0) -> None:
        """Start it and wait until it answers ``PING``; raises :class:`ConfigError` with the
        end of its log when it exits or stays silent for ``timeout_s``."""
        args = [
            self.binary,
            "--port", "0",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "no",
            "--maxmemory-policy", "noeviction",
            "--daemonize", "no",
            "--databases", "1",
            "--logfile", "",
        ]  # fmt: skip
        with open(self.directory / "redis.log", "ab") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C at the terminal reaches the supervisor, which
                # stops the workers first (they leave the cluster through this Redis).
                start_new_session=True,
                preexec_fn=self.preexec,  # noqa: PLW1509 - the caller says when it is safe
            )
        deadline = time.monotonic() + timeout_s
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (self.directory / "redis.log").read_text(errors="replace")[-800:]
                raise ConfigError(
                    f"the workers' redis-server ({self.binary}) did not start: {tail.strip()}"
                )
            time.sleep(0.02)

    def _answers(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(0.5)
                s.connect(str(self.socket_path))
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout_s: float = 5.0) -> None:
        """``SIGTERM``, then ``SIGKILL`` if it lingers. Idempotent."""
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout_s)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> PrivateRedis:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
