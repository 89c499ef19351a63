"""What the people counter keeps, in SQL: counts per day and per hour for each line, traffic
events, and the face index.

The crops live apart (:mod:`.face_files` beside a SQLite database, :mod:`.face_db` in any
other); this index maps the server-made ``face_id`` to its crop's name, so no client string
ever becomes a path.

Each write is its own transaction, committed before the caller goes on: the runtime stores a
count, an event or a face before any client is shown it, so a crash never takes back what was
reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from ..errors import StaleOwner
from ..people.records import MAX_FACE_ID, face_filename
from .schema import daily_counts, faces, hourly_counts, source_fences, traffic_events
from .sqlstore import SQLStore

__all__ = ["MAX_FACE_ID", "SQLPeopleRecords", "face_filename"]


class SQLPeopleRecords:
    """The people counter's records (:class:`~framebroker.people.records.PeopleRecords`) in
    the same database as the sessions."""

    def __init__(self, store: SQLStore) -> None:
        self._store = store

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
        """Index a new face; returns its id and its file name.

        ``place(name)`` runs inside the transaction once the id is known and must put the
        face's crop in place under ``name``; the row commits only if it returns, so a crash
        can never leave an indexed face without its crop. Whatever ``place`` raises is raised
        here, with nothing indexed. Without ``place`` the caller writes the crop afterwards.
        """
        now = time.time()
        with self._store.transaction() as conn:
            face_id = conn.execute(
                insert(faces).values(
                    source=source,
                    track_id=track_id,
                    filename="",
                    day=day,
                    created_at=now,
                    updated_at=now,
                    quality=quality,
                    score=score,
                )
            ).inserted_primary_key[0]  # type: ignore[index]
            name = face_filename(face_id)
            conn.execute(update(faces).where(faces.c.face_id == face_id).values(filename=name))
            if place is not None:
                place(name)
        return int(face_id), name

    def update_face(self, face_id: int, *, quality: float, score: float) -> None:
        with self._store.transaction() as conn:
            conn.execute(
                update(faces)
                .where(faces.c.face_id == face_id)
                .values(quality=quality, score=score, updated_at=time.time())
            )

    def get_face(self, face_id: int) -> dict[str, Any] | None:
        """The face's row, or ``None``; an id no SQL integer holds is simply not found."""
        if not 0 <= face_id <= MAX_FACE_ID:
            return None
        with self._store.transaction() as conn:
            row = conn.execute(select(faces).where(faces.c.face_id == face_id)).first()
        return None if row is None else dict(row._mapping)

    def recent_faces(self, limit: int = 50) -> list[dict[str, Any]]:
        """Newest first."""
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        with self._store.transaction() as conn:
            rows = conn.execute(
                select(faces)
                .order_by(faces.c.created_at.desc(), faces.c.face_id.desc())
                .limit(limit)
            ).all()
        return [dict(r._mapping) for r in rows]

    def faces_page(self, limit: int, before: int | None = None) -> list[dict[str, Any]]:
        """Up to ``limit`` faces, highest ``face_id`` (newest saved) first; with ``before``,
        only those whose id is below it, so the last id of one page asks for the next."""
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        query = select(faces).order_by(faces.c.face_id.desc()).limit(limit)
        if before is not None:
            query = query.where(faces.c.face_id < before)
        with self._store.transaction() as conn:
            rows = conn.execute(query).all()
        return [dict(r._mapping) for r in rows]

    def face_filenames(self) -> set[str]:
        """The file name of every indexed face (to tell a crash's leftovers from faces)."""
        with self._store.transaction() as conn:
            return set(conn.execute(select(faces.c.filename)).scalars())

    def count_faces(self, day: str, source: str | None = None) -> int:
        query = select(func.count()).select_from(faces).where(faces.c.day == day)
        if source is not None:
            query = query.where(faces.c.source == source)
        with self._store.transaction() as conn:
            return int(conn.execute(query).scalar_one())

    def expire_faces(self, *, keep: int, min_day: str) -> list[str]:
        """Drop faces older than ``min_day`` and all but the newest ``keep``; returns the file
        names to delete."""
        with self._store.transaction() as conn:
            newest = select(faces.c.face_id).order_by(faces.c.face_id.desc()).limit(keep)
            doomed = conn.execute(
                select(faces.c.face_id, faces.c.filename).where(
                    (faces.c.day < min_day) | faces.c.face_id.not_in(newest)
                )
            ).all()
            if doomed:
                conn.execute(delete(faces).where(faces.c.face_id.in_([d[0] for d in doomed])))
        return [d[1] for d in doomed]

    # -- counts --------------------------------------------------------------------------

    def claim_source(self, source: str) -> int:
        """The next fence of ``source``: one more than any start of it took before."""
        now = time.time()
        with self._store.transaction() as conn:
            claimed = conn.execute(
                update(source_fences)
                .where(source_fences.c.source == source)
                .values(fence=source_fences.c.fence + 1, claimed_at=now)
                .returning(source_fences.c.fence)
            ).scalar_one_or_none()
            if claimed is None:
                conn.execute(insert(source_fences).values(source=source, fence=1, claimed_at=now))
                claimed = 1
        return int(claimed)

    def save_counts(
        self,
        source: str,
        day: str,
        lines: dict[str, dict[str, int]],
        hours: dict[tuple[int, str], tuple[int, int]] | None = None,
        *,
        fence: int | None = None,
    ) -> None:
        """Store the day's counts per line and, when given, its crossings per (hour, line)
        as ``(in, out)``, replacing what was stored for that day, in one transaction. With
        ``fence`` (what :meth:`claim_source` gave this run of the source), raise
        ``StaleOwner`` and store nothing if a later run of the source claimed it since."""
        now = time.time()
        with self._store.transaction() as conn:
            if fence is not None:
                newest = conn.execute(
                    select(source_fences.c.fence)
                    .where(source_fences.c.source == source)
                    .with_for_update()
                ).scalar_one_or_none()
                if newest is not None and newest > fence:
                    raise StaleOwner(
                        f"the counts of source {source!r} are kept by a later run of it "
                        f"(fence {newest}, this run's {fence})",
                        field="source",
                    )
            conn.execute(
                delete(daily_counts).where(
                    daily_counts.c.source == source, daily_counts.c.day == day
                )
            )
            if lines:
                conn.execute(
                    insert(daily_counts),
                    [
                        {
                            "source": source,
                            "day": day,
                            "line": name,
                            "count_in": int(c.get("in", 0)),
                            "count_out": int(c.get("out", 0)),
                            "updated_at": now,
                        }
                        for name, c in lines.items()
                    ],
                )
            if hours is None:
                return
            conn.execute(
                delete(hourly_counts).where(
                    hourly_counts.c.source == source, hourly_counts.c.day == day
                )
            )
            if hours:
                conn.execute(
                    insert(hourly_counts),
                    [
                        {
                            "source": source,
                            "day": day,
                            "hour": hour,
                            "line": line,
                            "count_in": int(cin),
                            "count_out": int(cout),
                        }
                        for (hour, line), (cin, cout) in hours.items()
                    ],
                )

    def load_counts(self, source: str, day: str) -> dict[str, dict[str, int]]:
        with self._store.transaction() as conn:
            rows = conn.execute(
                select(
                    daily_counts.c.line, daily_counts.c.count_in, daily_counts.c.count_out
                ).where(daily_counts.c.source == source, daily_counts.c.day == day)
            ).all()
        return {line: {"in": cin, "out": cout} for line, cin, cout in rows}

    def load_hourly(self, source: str, day: str) -> dict[tuple[int, str], tuple[int, int]]:
        """The day's crossings per (hour, line), as :meth:`save_counts` stored them."""
        with self._store.transaction() as conn:
            rows = conn.execute(
                select(
                    hourly_counts.c.hour,
                    hourly_counts.c.line,
                    hourly_counts.c.count_in,
                    hourly_counts.c.count_out,
                ).where(hourly_counts.c.source == source, hourly_counts.c.day == day)
            ).all()
        return {(hour, line): (cin, cout) for hour, line, cin, cout in rows}

    def hourly_totals(self, source: str, day: str) -> list[dict[str, int]]:
        """24 rows ``{"hour", "count_in", "count_out"}`` summed over lines, for a chart."""
        totals = [[0, 0] for _ in range(24)]
        for (hour, _line), (cin, cout) in self.load_hourly(source, day).items():
            totals[hour][0] += cin
            totals[hour][1] += cout
        return [{"hour": h, "count_in": i, "count_out": o} for h, (i, o) in enumerate(totals)]

    # -- traffic events --------------------------------------------------------------------

    def event_started(self, *, source: str, day: str, started_at: float, start_time: str) -> int:
        with self._store.transaction() as conn:
            event_id = conn.execute(
                insert(traffic_events).values(
                    source=source, day=day, started_at=started_at, start_time=start_time
                )
            ).inserted_primary_key[0]  # type: ignore[index]
        return int(event_id)

    def event_ended(
        self, event_id: int, *, ended_at: float, end_time: str, count_in: int | None
    ) -> None:
        """Close an event; ``count_in`` is ``None`` when it is not known (a crash cut it)."""
        with self._store.transaction() as conn:
            conn.execute(
                update(traffic_events)
                .where(traffic_events.c.id == event_id)
                .values(ended_at=ended_at, end_time=end_time, count_in=count_in)
            )

    def open_events(self, source: str) -> list[dict[str, Any]]:
        """The source's events that have no end, oldest first."""
        with self._store.transaction() as conn:
            rows = conn.execute(
                select(traffic_events)
                .where(traffic_events.c.source == source, traffic_events.c.ended_at.is_(None))
                .order_by(traffic_events.c.started_at)
            ).all()
        return [dict(r._mapping) for r in rows]

    def last_counted_at(self, source: str) -> float | None:
        """When the source's counts were last stored (any day), or ``None`` if never."""
        with self._store.transaction() as conn:
            found = conn.execute(
                select(func.max(daily_counts.c.updated_at)).where(daily_counts.c.source == source)
            ).scalar_one()
        return None if found is None else float(found)

    def events_on(self, source: str, day: str) -> list[dict[str, Any]]:
        with self._store.transaction() as conn:
            rows = conn.execute(
                select(traffic_events)
                .where(traffic_events.c.source == source, traffic_events.c.day == day)
                .order_by(traffic_events.c.started_at)
            ).all()
        return [dict(r._mapping) for r in rows]
