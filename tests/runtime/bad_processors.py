"""Processors that misbehave, importable by dotted path (``tests.runtime.bad_processors:...``)
from a server's configuration as well as from tests."""

from __future__ import annotations

import mmap
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from framebroker.core import Frame, ProcessContext, Processor

MiB = 1024 * 1024
RELEASE = threading.Event()
"""Lets every :class:`Hang` waiting on ``"event"`` go; set it at a test's teardown."""
GIVE_UP_S = 60.0
"""A hang never outlives a test run, even if nobody releases it."""


class Hang(Processor):
    """Hangs on frames whose meta has ``hang``: ``"event"`` waits for :data:`RELEASE`,
    anything else is a file path waited for (a server in another process). Other frames pass."""

    name: ClassVar[str] = "hang"

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        release = frame.meta.get("hang")
        if release is None:
            return {"hang": "passed"}
        if release == "event":
            RELEASE.wait(GIVE_UP_S)
        else:
            deadline = time.monotonic() + GIVE_UP_S
            while not Path(release).exists() and time.monotonic() < deadline:
                time.sleep(0.02)
        return {"hang": "released"}


class Leak(Processor):
    """Keeps 2 MiB for every frame it sees, written so it is resident.

    Mapped afresh each time rather than taken from malloc, which might hand back memory some
    earlier test freed (resident already): then the process would not grow, and neither would
    what the server reports.
    """

    name: ClassVar[str] = "leak"

    def __init__(self) -> None:
        self.kept: list[mmap.mmap] = []

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        block = mmap.mmap(-1, 2 * MiB)
        np.frombuffer(block, dtype=np.uint8)[:] = 1
        self.kept.append(block)
        return {"kept_mib": 2 * len(self.kept)}


class Noop(Processor):
    name: ClassVar[str] = "noop"

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        return {"noop": frame.index}


class Tally(Processor):
    """Counts its frames and reports them at the end, to show whether it ran and ended."""

    name: ClassVar[str] = "tally"

    def __init__(self) -> None:
        self.seen = 0
        self.closed = False

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        self.seen += 1
        return {"tally": self.seen}

    def end(self, ctx: ProcessContext) -> dict[str, Any] | None:
        return {f"{self.name}_total": self.seen}

    def close(self) -> None:
        self.closed = True
