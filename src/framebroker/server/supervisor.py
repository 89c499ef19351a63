"""``serve --workers N``: N server processes on one machine under one supervisor.

The supervisor checks the settings, binds every listener (the main port and each ``--compat``
port) and takes the data directory's lock, as ``serve`` does; then it starts a private
``redis-server`` (unless ``--cluster`` names one) and N workers (:mod:`.worker`), each
inheriting listening sockets of its own on the same ports (``SO_REUSEPORT``): the kernel
spreads new connections over the workers. Each worker is a node of one cluster
(``<node>-w<i>``), so a request that lands on a worker that does not run its session is
relayed to the one that does.

It restarts a worker that dies (with a growing delay while one keeps dying at once): the new
process is the next life of the same node, whose earlier life's sessions are taken over and
resumed from their last snapshot on their next request. ``SIGINT`` or ``SIGTERM`` stops the
workers (each suspends its sessions and leaves the cluster), then the private Redis.
``docs/cluster.md`` says why the design is so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Final

from pydantic import SecretStr
from sqlalchemy.exc import SQLAlchemyError

from ..config import Settings
from ..errors import ConfigError
from ..storage import SQLPeopleRecords, face_crops_for
from ..video_analysis.service import read_or_make_key
from .app import build_registry, open_configured_store
from .data_lock import DataDirLock
from .node_id import node_id
from .private_redis import PrivateRedis, redis_server_binary
from .serve import bind_worker_listeners
from .startup_checks import check_startup
from .uvicorn_hooks import check_uvicorn
from .workers import ROSTER_NAME, WorkerRecord, WorkerSpec, die_with_parent, write_roster

__all__ = ["Supervisor", "run_supervisor", "worker_settings"]

log = logging.getLogger("framebroker")

_POLL_S: Final = 0.1
_STOP_TIMEOUT_S: Final = 30.0
"""How long stopping workers may take to suspend their sessions before they are killed."""
_STEADY_S: Final = 10.0
"""A worker that lived this long is restarted at once; one that died sooner, after a delay
that doubles from :data:`_FIRST_DELAY_S` up to :data:`_MAX_DELAY_S`."""
_FIRST_DELAY_S: Final = 0.5
_MAX_DELAY_S: Final = 30.0


def worker_settings(
    settings: Settings,
    index: int,
    *,
    node: str,
    url: str,
    secret: str,
    private: bool,
    ports: dict[str, int],
) -> Settings:
    """The settings of worker ``index``: a node ``<node>-w<index>`` of the cluster at
    ``url``, on the ports bound already. With a ``private`` Redis its relay listens on
    loopback (the workers are its only callers); else as configured, each worker on its own
    port (``relay_port`` + index, or any). Every worker is given every ``--source``: each
    source's lease in Redis lets one worker run it at a time (a source read twice would be
    counted twice), and another takes it over when that worker dies."""
    cluster = settings.cluster
    relay = cluster.relay_port + index if cluster.relay_port else 0
    updates: dict[str, object] = {"url": url, "relay_port": relay}
    if private:
        updates.update(relay_host="127.0.0.1", address="127.0.0.1")
    analysis = settings.analysis
    if analysis.secret_key is None:
        analysis = analysis.model_copy(update={"secret_key": SecretStr(secret)})
    return settings.model_copy(
        update={
            "workers": None,
            "node_id": f"{node}-w{index}",
            "port": ports["http"],
            "compat_ports": {
                **settings.compat_ports,
                **{name: port for name, port in ports.items() if name != "http"},
            },
            "cluster": cluster.model_copy(update=updates),
            "analysis": analysis,
            "sources": settings.sources,
        }
    )


@dataclass
class _Slot:
    """One worker's place: the process now in it, and its record."""

    index: int
    settings: Settings
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    started_at: float = 0.0
    restarts: int = 0
    quick_deaths: int = 0
    due: float = 0.0

    def record(self) -> WorkerRecord:
        pid = self.process.pid if self.process is not None else 0
        node = self.settings.node_id or ""
        return WorkerRecord(self.index, node, pid, self.restarts, self.started_at)


class Supervisor:
    """Keeps one worker process in each of ``len(settings)`` slots until :meth:`stop` (or a
    signal, under :meth:`run`). ``listeners[i]``: name → (port, listening socket), inherited
    by worker ``i``, and again by each worker started in its place (the supervisor holds
    them: connections that wait while it restarts are taken by the next one). ``redis``: the
    private Redis to keep running, if any."""

    def __init__(
        self,
        settings: list[Settings],
        listeners: list[dict[str, tuple[int, int]]],
        *,
        roster: Path,
        app_dir: Path,
        redis: PrivateRedis | None = None,
    ) -> None:
        self.slots = [_Slot(i, s) for i, s in enumerate(settings)]
        self.listeners = listeners
        self.roster = roster
        self.app_dir = app_dir
        self.redis = redis
        self.signals = 0
        self.failed = False

    def run(self) -> int:
        """Start the workers and keep them until ``SIGINT``/``SIGTERM``; returns the exit
        status (2: a worker could not start at all)."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            for slot in self.slots:
                self._start(slot)
            self._write_roster()
            while not self.signals and not self.failed:
                self._tend()
                time.sleep(_POLL_S)
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 2 if self.failed else 0

    def _on_signal(self, _signum: int, _frame: FrameType | None) -> None:
        self.signals += 1
        if self.signals > 1:  # a second Ctrl-C: no more waiting (stop() reaps them)
            for slot in self.slots:
                if slot.process is not None:
                    with contextlib.suppress(ProcessLookupError):
                        slot.process.kill()

    def _start(self, slot: _Slot) -> None:
        listeners = self.listeners[slot.index]
        spec = WorkerSpec(
            slot.index, slot.settings, listeners, self.roster, self.app_dir, os.getpid()
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "framebroker.server.worker"],
            stdin=subprocess.PIPE,
            pass_fds=[fd for _, fd in listeners.values()],
            # Its own session: a Ctrl-C at the terminal reaches the supervisor alone, which
            # stops each worker once (a second SIGINT would make uvicorn skip the clean stop).
            start_new_session=True,
        )
        assert process.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # it died at once: _tend sees it
            process.stdin.write(pickle.dumps(spec))
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()
        slot.process = process
        slot.started = time.monotonic()
        slot.started_at = time.time()
        log.info(
            "worker %d started: node %s, pid %d", slot.index, slot.settings.node_id, process.pid
        )

    def _tend(self) -> None:
        """Notice the workers that died, start those whose time came, keep Redis up."""
        now = time.monotonic()
        changed = False
        for slot in self.slots:
            process = slot.process
            if process is not None and process.poll() is not None:
                self._died(slot, process, now)
                changed = True
            if slot.process is None and not self.failed and now >= slot.due:
                self._start(slot)
                changed = True
        if self.redis is not None and not self.redis.alive and not self.signals:
            log.warning("the workers' redis-server stopped; starting it again")
            with contextlib.suppress(ConfigError):
                self.redis.start()
        if changed:
            self._write_roster()

    def _died(self, slot: _Slot, process: subprocess.Popen[bytes], now: float) -> None:
        code = process.returncode
        how = f"was killed by {_signal_name(-code)}" if code < 0 else f"exited with status {code}"
        slot.process = None
        lived = now - slot.started
        if slot.restarts == 0 and code == 2 and lived < _STOP_TIMEOUT_S:
            # Its first life refused to start (its reason is in the log above): another try
            # would refuse the same way.
            log.error("worker %d %s before it started; stopping", slot.index, how)
            self.failed = True
            return
        slot.quick_deaths = 0 if lived >= _STEADY_S else slot.quick_deaths + 1
        delay = 0.0 if not slot.quick_deaths else _FIRST_DELAY_S * 2 ** (slot.quick_deaths - 1)
        delay = min(delay, _MAX_DELAY_S)
        slot.due = now + delay
        slot.restarts += 1
        log.warning(
            "worker %d (node %s, pid %d) %s; starting it again%s (restart %d)",
            slot.index,
            slot.settings.node_id,
            process.pid,
            how,
            f" in {delay:g} s" if delay else "",
            slot.restarts,
        )

    def stop(self) -> None:
        """``SIGTERM`` every worker, wait for them to suspend their sessions (up to
        :data:`_STOP_TIMEOUT_S`, or until a second signal), then kill what is left."""
        running = [s.process for s in self.slots if s.process is not None]
        log.info("stopping %d worker(s)", len(running))
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        for process in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.0, deadline - time.monotonic()))
        self._kill_all()
        for slot in self.slots:
            slot.process = None
        with contextlib.suppress(FileNotFoundError):
            self.roster.unlink()

    def _kill_all(self) -> None:
        for slot in self.slots:
            process = slot.process
            if process is not None and process.poll() is None:
                log.warning("worker %d did not stop in time; killing it", slot.index)
                process.kill()
                process.wait()

    def _write_roster(self) -> None:
        try:
            write_roster(self.roster, os.getpid(), [s.record() for s in self.slots])
        except OSError as exc:
            log.warning("cannot write the workers' roster %s: %s", self.roster, exc)


def _signal_name(number: int) -> str:
    try:
        return f"{signal.Signals(number).name} ({number})"
    except ValueError:
        return f"signal {number}"


def run_supervisor(settings: Settings, *, app_dir: Path) -> int:
    """``serve --workers``: check, bind, lock, start Redis and the workers; serve until
    interrupted. Raises :class:`ConfigError` for anything that stops it before a worker
    runs; returns the exit status."""
    check_uvicorn()
    count = settings.worker_count
    if count is None:
        raise ValueError("run_supervisor needs settings.workers")
    private = settings.cluster.url is None
    binary = redis_server_binary() if private else None
    # With --cluster: also a shared PostgreSQL store, SECRET_KEY and a Redis that answers.
    check_startup(settings, build_registry(settings))
    bound = bind_worker_listeners(settings, count)
    try:
        with DataDirLock(settings.data_dir):
            _prepare_store(settings)
            node = node_id(settings)
            secret = settings.analysis.secret_key
            # Every worker is this supervisor's child: the data directory's key (the one
            # Socket.IO's ids are signed with when SECRET_KEY is unset) serves them all.
            shared = (
                secret.get_secret_value()
                if secret is not None
                else read_or_make_key(settings.data_dir / "secret.key").hex()
            )
            ports = {name: port for name, (port, _) in bound[0].items()}
            fds = [
                {name: (port, sock.fileno()) for name, (port, sock) in listeners.items()}
                for listeners in bound
            ]
            with contextlib.ExitStack() as stack:
                redis = None
                url = settings.cluster.url
                if binary is not None:
                    # Forking with a function to run in the child is safe only while no other
                    # thread can hold a lock the child would need; the supervisor starts none.
                    alone = threading.active_count() == 1
                    preexec = die_with_parent if alone else None
                    redis = stack.enter_context(PrivateRedis(binary, preexec=preexec))
                    redis.start()
                    url = redis.url
                assert url is not None
                per_worker = [
                    worker_settings(
                        settings, i, node=node, url=url, secret=shared, private=private, ports=ports
                    )
                    for i in range(count)
                ]
                where = "a private redis-server" if private else url
                log.info("supervisor %d: %d worker(s), a cluster on %s", os.getpid(), count, where)
                supervisor = Supervisor(
                    per_worker,
                    fds,
                    roster=settings.data_dir / ROSTER_NAME,
                    app_dir=app_dir,
                    redis=redis,
                )
                status = supervisor.run()
            log.info("stopped")
            return status
    finally:
        for listeners in bound:
            for _, sock in listeners.values():
                sock.close()


def _prepare_store(settings: Settings) -> None:
    """Open the store once before any worker does: an empty database is made (or an older
    one migrated, or a newer one refused) here, not by N workers racing to do it. Then
    remove the face crops a crash left unfinished, here for the same reason: once workers
    run, one may be writing a face while another starts, and a sweep beside a writer could
    delete a crop renamed into place before its row commits (so workers never sweep)."""
    try:
        store = open_configured_store(settings)
    except SQLAlchemyError as exc:
        raise ConfigError(f"--database-url: cannot open the store: {exc}") from None
    try:
        records, crops = SQLPeopleRecords(store), face_crops_for(store, settings.faces_dir)
        gone = crops.sweep(records.face_filenames())
        if gone:
            log.info("removed %d face crop(s) a previous run left unfinished", gone)
    except (SQLAlchemyError, OSError) as exc:
        # Leftovers are harmless until the next start: not a reason to refuse this one.
        log.warning("could not sweep the face crops a previous run left: %s", exc)
    finally:
        store.close()
