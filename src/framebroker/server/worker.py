"""One worker of ``serve --workers``: ``python -m framebroker.server.worker``, started by the
supervisor (:mod:`.supervisor`) with a pickled :class:`~.workers.WorkerSpec` on its standard
input and the listening sockets as inherited file descriptors.

A worker is a whole server (every transport, on every listener it inherited) and one node of
the workers' cluster: the supervisor gave it its own node id, the cluster's Redis and secret.
It takes no data directory lock (its supervisor holds it) and runs no start-up checks (its
supervisor ran them before binding anything). Exit status: 0 stopped, 2 could not start
(the reason on standard error), 1 crashed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import socket
import sys

from ..errors import FramebrokerError
from ..logs import configure_logging
from .serve import build_services, loop_factory, serve_on
from .workers import RosterCollector, WorkerSpec, die_with_parent

__all__ = ["main", "run_worker"]

log = logging.getLogger("framebroker")


async def run_worker(spec: WorkerSpec) -> None:
    """Serve until interrupted (``SIGTERM`` from the supervisor)."""
    settings = spec.settings
    listeners = {
        name: (port, socket.socket(fileno=fd)) for name, (port, fd) in spec.listeners.items()
    }
    try:
        services = build_services(settings)
        services.sweep_faces = False  # the supervisor swept before any worker started
        services.broker.metrics.registry.register(RosterCollector(spec.roster))
        await serve_on(settings, listeners, services, announce=spec.index == 0)
    finally:
        for _, sock in listeners.values():
            sock.close()


def main() -> int:
    spec = pickle.load(sys.stdin.buffer)
    if not isinstance(spec, WorkerSpec):
        print("framebroker: a worker is started by serve --workers", file=sys.stderr)
        return 2
    die_with_parent()
    if os.getppid() != spec.supervisor:  # it died before the line above: nobody to serve
        return 1
    sys.path.insert(0, str(spec.app_dir))  # --processor and --model modules, as serve does
    configure_logging(spec.settings.log_level, spec.settings.log_format)
    try:
        with (
            contextlib.suppress(KeyboardInterrupt),
            asyncio.Runner(loop_factory=loop_factory(spec.settings.event_loop)) as runner,
        ):
            runner.run(run_worker(spec))
    except FramebrokerError as exc:
        log.error("worker %d could not start: %s", spec.index, exc.message)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
