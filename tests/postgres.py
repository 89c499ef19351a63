"""A throwaway PostgreSQL server for the tests and the benchmarks: Debian's binaries, a new
cluster in a temporary directory, on a free loopback port, stopped and removed after.

``initdb``, ``pg_ctl`` and ``postgres`` refuse to run as root; as root (CI on a fresh Debian
machine) the cluster belongs to, and runs as, the ``postgres`` user that Debian's package
makes, through ``setpriv``. The binaries are found in ``$FRAMEBROKER_PG_BINDIR``, else under
``/usr/lib/postgresql/<version>/bin`` (newest first), else on ``PATH``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["PostgresNotFound", "PostgresServer", "find_bindir", "running_postgres"]


class PostgresNotFound(RuntimeError):
    """No PostgreSQL server binaries here (apt-get install postgresql)."""


def find_bindir() -> Path:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``; raises PostgresNotFound."""
    chosen = os.environ.get("FRAMEBROKER_PG_BINDIR")
    candidates = [Path(chosen)] if chosen else []
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates += versions
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for folder in candidates:
        if all((folder / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return folder
    raise PostgresNotFound(
        "PostgreSQL's server binaries (initdb, pg_ctl, postgres) were not found; as root run "
        "apt-get install -y postgresql, or set FRAMEBROKER_PG_BINDIR"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One cluster: its folder, port and process. Start with :func:`running_postgres`."""

    USER = "framebroker"

    def __init__(self, bindir: Path, root: Path, *, durable: bool) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.port = 0
        self.durable = durable
        self._as: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(root, owner.pw_uid, owner.pw_gid)
            self._as = [
                "setpriv",
                f"--reuid={owner.pw_uid}",
                f"--regid={owner.pw_gid}",
                "--clear-groups",
            ]

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        done = subprocess.run(
            [*self._as, str(self.bindir / tool), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed:\n{done.stdout}{done.stderr}")

    def init(self) -> None:
        self._run(
            "initdb", "-D", str(self.data), "-U", self.USER, "-A", "trust", "-E", "UTF8",
            "--no-sync", "--no-instructions",
        )  # fmt: skip

    def start(self, port: int | None = None) -> None:
        """Start the server, on ``port`` (the one it had, to restart it) or a free one."""
        # On its own port again, retried while a killed server's last backends exit.
        attempts = 20 if port else 3
        for attempt in range(attempts):
            self.port = port or _free_port()
            options = [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-k {self.root}",
                "-c max_connections=200",
            ]
            if not self.durable:
                # Fast tests: no fsync, since only an OS crash would lose what the OS holds.
                # Commits stay synchronous: the tests crash the server itself (stop -m
                # immediate, SIGKILL), which loses a commit not yet written to the WAL.
                options += ["-c fsync=off", "-c full_page_writes=off"]
            try:
                self._run(
                    "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                    "-o", " ".join(options), "start",
                )  # fmt: skip
                return
            except RuntimeError:
                if attempt == attempts - 1:
                    raise RuntimeError(f"postgres did not start:\n{self.output()}") from None
                if port:
                    time.sleep(0.5)

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m MODE``: ``fast`` ends sessions cleanly, ``immediate`` is a crash
        (the next start recovers from the WAL)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def kill(self) -> None:
        """SIGKILL the postmaster: its backends notice and exit; restart with :meth:`start`."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        # Backends outlive a killed postmaster for a moment and hold the port's shared memory.
        time.sleep(0.5)

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def url(self, database: str = "postgres", driver: str = "postgresql") -> str:
        return f"{driver}://{self.USER}@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URL."""
        self.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running_postgres(*, durable: bool = False) -> Iterator[PostgresServer]:
    """A new cluster, started; stopped and deleted when the block ends. ``durable``: fsync
    as a real server does (for benchmarks), else skip it (tests)."""
    bindir = find_bindir()
    # Not under pytest's tmp_path: as root, that folder is closed to the postgres user.
    root = Path(tempfile.mkdtemp(prefix="framebroker-pg-"))
    server = PostgresServer(bindir, root, durable=durable)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.close()
