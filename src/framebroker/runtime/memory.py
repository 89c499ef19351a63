"""Which processor makes the server's memory grow: resident memory measured around its calls.

The process collector already exports ``process_resident_memory_bytes``, which shows *that*
memory grows. To show *which* processor grows it, :class:`RssProbe` (a
:class:`~framebroker.core.pipeline.CallProbe`) reads the resident set size before and after
every ``every``-th call of each processor and adds the change, times ``every``, to
``framebroker_processor_memory_growth_bytes{processor}``. A processor that keeps what it
allocates makes its series climb by about what it keeps per call; one that frees what it
allocates stays near zero.

Reading ``/proc/self/statm`` through a descriptor kept open costs about 4 µs, so the default of
one call in 16 adds well under a microsecond per call. RSS belongs to the whole process, so
while several processors run at once one may be charged for another's memory; such noise
evens out, while a steady leak keeps climbing. Where there is no ``/proc`` (not Linux) there is
no probe.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable

__all__ = ["RssProbe"]

log = logging.getLogger(__name__)

_STATM = "/proc/self/statm"


class RssProbe:
    """Reports ``(processor, estimated bytes)`` to ``record`` for every ``every``-th call.

    Create it with :meth:`open`; :meth:`close` releases its descriptor.
    """

    def __init__(self, fd: int, every: int, record: Callable[[str, float], None]) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self._fd = fd
        self._every = every
        self._record = record
        self._page = os.sysconf("SC_PAGE_SIZE")

    @classmethod
    def open(cls, every: int, record: Callable[[str, float], None]) -> RssProbe | None:
        """A probe sampling every ``every``-th call, or ``None`` when ``every`` is 0 or this
        system has no ``/proc/self/statm``."""
        if every <= 0:
            return None
        try:
            fd = os.open(_STATM, os.O_RDONLY)
        except OSError:
            log.info("no %s here: processor memory growth is not measured", _STATM)
            return None
        return cls(fd, every, record)

    @property
    def every(self) -> int:
        return self._every

    def rss(self) -> int:
        """Resident bytes of this process now; 0 once closed."""
        try:
            # statm is "size resident shared ..." in pages; pread re-reads it from the start.
            return int(os.pread(self._fd, 64, 0).split()[1]) * self._page
        except (OSError, IndexError, ValueError):
            return 0

    def before(self) -> int:
        return self.rss()

    def after(self, processor: str, before: int) -> None:
        now = self.rss()
        if now and before:
            self._record(processor, float((now - before) * self._every))

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
