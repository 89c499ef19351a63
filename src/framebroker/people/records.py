"""What the people counter keeps, as protocols: its records (counts, events, the face index)
and its face crops. The SQL records and both kinds of crops (files, database rows) live in
:mod:`framebroker.storage`; the feed, the live publisher, the people WebSocket and the console
know only these.

Every method blocks: call it from a worker thread, never from the event loop. A store that
cannot reach its database raises :class:`~framebroker.errors.StoreUnavailable` from any of
them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = ["MAX_FACE_ID", "FaceCrops", "PeopleRecords", "StagedCrop", "face_filename"]

MAX_FACE_ID = 2**63 - 1
"""The largest id a SQL integer column holds: a larger one names no face."""


def face_filename(face_id: int) -> str:
    """The one way a face crop is named: from the store's integer id, never client text."""
    return f"face_{int(face_id)}.jpg"


class PeopleRecords(Protocol):
    """Counts per day and per hour for each line, traffic events, and the face index.

    Each write is its own transaction, committed before the method returns: the counter
    stores a count, an event or a face before any client is shown it.
    """

    # -- faces ---------------------------------------------------------------------------

    def add_face(
        self,
        *,
        source: str,
        track_id: int,
        day: str,
        quality: float,
        score: float,
        place: Callable[[str], None] | None = None,
    ) -> tuple[int, str]:
        """Index a new face; returns its id and its crop's name (:func:`face_filename`).

        ``place(name)`` runs inside the transaction once the id is known and must put the
        crop in place under ``name`` (:meth:`FaceCrops.place`); the row commits only if it
        returns, so no face is ever indexed without its crop. Whatever ``place`` raises is
        raised here, with nothing indexed.
        """
        ...

    def update_face(self, face_id: int, *, quality: float, score: float) -> None: ...

    def get_face(self, face_id: int) -> dict[str, Any] | None:
        """The face's row, or ``None``; an id no SQL integer holds is simply not found."""
        ...

    def recent_faces(self, limit: int = 50) -> list[dict[str, Any]]:
        """Newest first; raises ``ValueError`` on a negative ``limit``."""
        ...

    def faces_page(self, limit: int, before: int | None = None) -> list[dict[str, Any]]:
        """Up to ``limit`` faces, highest id first; with ``before``, only lower ids."""
        ...

    def face_filenames(self) -> set[str]:
        """The crop name of every indexed face (to tell a crash's leftovers from faces)."""
        ...

    def count_faces(self, day: str, source: str | None = None) -> int: ...

    def expire_faces(self, *, keep: int, min_day: str) -> list[str]:
        """Drop faces older than ``min_day`` and all but the newest ``keep``; returns the
        crop names to remove."""
        ...

    # -- counts --------------------------------------------------------------------------

    def claim_source(self, source: str) -> int:
        """A fence for this run of ``source``: greater than any run of it claimed before
        (in a cluster, on any node), so that its counts can be saved under it."""
        ...

    def save_counts(
        self,
        source: str,
        day: str,
        lines: dict[str, dict[str, int]],
        hours: dict[tuple[int, str], tuple[int, int]] | None = None,
        *,
        fence: int | None = None,
    ) -> None:
        """Store the day's totals per line and, when given, its crossings per (hour, line)
        as ``(in, out)``, replacing what was stored for that day, in one transaction.

        With ``fence``, raise ``StaleOwner`` (storing nothing) when a later run of the
        source claimed it since: a holder the source was taken from must not overwrite the
        counts its successor carries on from."""
        ...

    def load_counts(self, source: str, day: str) -> dict[str, dict[str, int]]: ...

    def load_hourly(self, source: str, day: str) -> dict[tuple[int, str], tuple[int, int]]: ...

    def hourly_totals(self, source: str, day: str) -> list[dict[str, int]]:
        """24 rows ``{"hour", "count_in", "count_out"}`` summed over lines."""
        ...

    def last_counted_at(self, source: str) -> float | None:
        """When the source's counts were last stored (any day), or ``None`` if never."""
        ...

    # -- traffic events --------------------------------------------------------------------

    def event_started(
        self, *, source: str, day: str, started_at: float, start_time: str
    ) -> int: ...

    def event_ended(
        self, event_id: int, *, ended_at: float, end_time: str, count_in: int | None
    ) -> None:
        """Close an event; ``count_in`` is ``None`` when it is not known (a crash cut it)."""
        ...

    def open_events(self, source: str) -> list[dict[str, Any]]:
        """The source's events that have no end, oldest first."""
        ...

    def events_on(self, source: str, day: str) -> list[dict[str, Any]]: ...


@dataclass(frozen=True, slots=True)
class StagedCrop:
    """A crop made ready before its face has an id: its bytes and, for crops kept as files,
    the temporary file they were written to."""

    jpeg: bytes
    path: Path | None = None


class FaceCrops(Protocol):
    """Where the JPEG crops of indexed faces live, by crop name (:func:`face_filename`).

    A new face's crop is staged first (slow work such as an fsync happens there, outside any
    transaction), then placed by :meth:`PeopleRecords.add_face` inside the transaction that
    indexes the face. Names that :func:`face_filename` did not make are refused with
    ``ValueError``.
    """

    def stage(self, jpeg: bytes) -> StagedCrop: ...

    def place(self, staged: StagedCrop, name: str) -> None:
        """Put a staged crop in place under ``name``, replacing any crop there."""
        ...

    def discard(self, staged: StagedCrop) -> None:
        """Drop a staged crop that will not be placed (its face did not commit)."""
        ...

    def write(self, name: str, jpeg: bytes) -> None:
        """Replace the crop ``name`` atomically (a better crop of a known face)."""
        ...

    def read(self, name: str) -> bytes | None:
        """The crop ``name``, or ``None`` when there is none."""
        ...

    def present(self, names: Collection[str]) -> set[str]:
        """Those of ``names`` that have a crop."""
        ...

    def remove(self, name: str) -> None:
        """Delete the crop ``name`` if it is there."""
        ...

    def sweep(self, indexed: set[str]) -> int:
        """At start-up, before anything writes: delete what a crash left (staged crops,
        crops of no indexed face); returns how many went."""
        ...
