"""What the supervisor of ``serve --workers`` and its workers share: the spec a worker is
started with, and the roster the supervisor keeps of them (``DATA_DIR/workers.json``), which
every worker shows in ``/metrics``.

The roster is a small JSON file the supervisor rewrites (atomically: a temporary file renamed
into place) whenever a worker starts or dies: each worker's index, node id, process id and
how many times it was restarted. A worker reads it when ``/metrics`` is scraped, so any
worker answers for all of them with no channel between the processes but the file, and a
test or an operator finds the workers' process ids in it.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..config import Settings

__all__ = [
    "ROSTER_NAME",
    "RosterCollector",
    "WorkerRecord",
    "WorkerSpec",
    "die_with_parent",
    "read_roster",
    "write_roster",
]

ROSTER_NAME: Final = "workers.json"
_PR_SET_PDEATHSIG: Final = 1


def die_with_parent() -> None:
    """Have the kernel send this process ``SIGTERM`` when its parent dies, however it dies
    (``kill -9`` included), so nothing a supervisor started outlives it. Linux only;
    elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """How one worker runs: sent pickled on its standard input by the supervisor (its
    parent: nothing else writes there). ``listeners``: name → (port, inherited fd);
    ``supervisor``: the parent's process id."""

    index: int
    settings: Settings
    listeners: dict[str, tuple[int, int]]
    roster: Path
    app_dir: Path
    supervisor: int


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """One worker as the roster shows it; ``pid`` 0 while it waits to be started again."""

    index: int
    node: str
    pid: int
    restarts: int
    started_at: float


def write_roster(path: Path, supervisor: int, workers: Sequence[WorkerRecord]) -> None:
    """Replace the roster at ``path`` in one rename (a reader never sees half a file)."""
    body = json.dumps({"supervisor": supervisor, "workers": [asdict(w) for w in workers]})
    fd, tmp = tempfile.mkstemp(prefix=".workers-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(body)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_roster(path: Path) -> list[WorkerRecord]:
    """The workers the roster at ``path`` lists; none when it is missing or unreadable (a
    scrape must not fail because the supervisor is rewriting it)."""
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
        return [WorkerRecord(**w) for w in data["workers"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


class RosterCollector(Collector):
    """``framebroker_workers`` and ``framebroker_worker_restarts_total{worker}``, read from
    the roster at each scrape."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def collect(self) -> Iterator[Metric]:
        workers = read_roster(self.path)
        yield GaugeMetricFamily(
            "framebroker_workers", "worker processes the supervisor keeps", value=len(workers)
        )
        restarts = CounterMetricFamily(
            "framebroker_worker_restarts",
            "times the supervisor started a worker again after it died",
            labels=["worker"],
        )
        for worker in workers:
            restarts.add_metric([str(worker.index)], worker.restarts)
        yield restarts
