"""The :class:`~framebroker.core.store.Store` on SQLAlchemy Core: SQLite (WAL) or any SQL URL.

The core only knows the ``Store`` protocol; every SQL statement of framebroker lives in this
package. SQLite is the default because a single node needs no database server; the same code
runs on PostgreSQL when several nodes share one store, and nothing SQLite-specific (pragmas,
the in-memory pool) runs there.

Writes that race are made atomic with ``INSERT ... ON CONFLICT`` on SQLite and PostgreSQL, so a
session's end may land before its start (the runtime records the start in the background) and
the first end recorded is the one kept.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import orjson
from sqlalchemy import (
    JSON,
    CheckConstraint,
    Column,
    Connection,
    Double,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    delete,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool, StaticPool

from ..core.session import SessionSummary
from ..errors import ConfigError

__all__ = ["SCHEMA_VERSION", "SQLStore"]

SCHEMA_VERSION: Final = 2
"""Version of the schema this code writes; bump it and add a step to ``_MIGRATIONS``."""

ACTIVE: Final = "active"
ENDED: Final = "ended"

metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    # A single row (id 1) so "which version is this database" is one unambiguous read.
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", Integer, nullable=False),
    CheckConstraint("id = 1", name="schema_version_single_row"),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("transport", String(64), nullable=False),
    Column("pipeline", JSON, nullable=False),
    Column("state", String(16), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("ended_at", Double, nullable=True),
    Column("info", JSON, nullable=False),
    # none_as_null: an active session has no summary, stored as SQL NULL, not JSON "null".
    Column("summary", JSON(none_as_null=True), nullable=True),
    CheckConstraint(f"state IN ('{ACTIVE}', '{ENDED}')", name="sessions_state"),
    Index("ix_sessions_created_at", "created_at"),
    Index("ix_sessions_state", "state"),
)

session_snapshots = Table(
    "session_snapshots",
    metadata,
    # No foreign key to ``sessions``: a snapshot may be saved before the background write of
    # the session's start has landed.
    Column("session_id", String(255), primary_key=True),
    Column("snapshot", JSON, nullable=False),
    Column("updated_at", Double, nullable=False),
)


def _tables_only(conn: Connection) -> None:
    """A step that only adds tables: ``create_all`` after the steps makes them."""


_MIGRATIONS: dict[int, Callable[[Connection], None]] = {
    1: _tables_only,  # 2 adds hourly_counts
}
"""``_MIGRATIONS[n]`` upgrades a database from version ``n`` to ``n + 1``."""

_SQLITE_PRAGMAS: Final = (
    # WAL lets readers run while one writer commits; NORMAL is durable across process crashes
    # in WAL mode and much cheaper than FULL.
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    # Worker threads write concurrently; wait for the lock instead of failing at once.
    "PRAGMA busy_timeout=5000",
)


def _json_dumps(value: Any) -> str:
    # Processor results often hold numpy scalars or arrays; the stdlib encoder rejects them.
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS).decode()


def _set_sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _is_sqlite_memory(url: URL) -> bool:
    database = url.database or ""
    return (
        database in ("", ":memory:")
        or "mode=memory" in database
        or (url.query.get("mode") == "memory")
    )


def _engine_for(url: URL) -> Engine:
    """Build the engine; SQLite gets its pool and pragmas, other backends their defaults."""
    if url.get_backend_name() != "sqlite":
        # pre_ping: a database server restarted under a long-running node is noticed per
        # checkout instead of failing the next write.
        return create_engine(url, pool_pre_ping=True, json_serializer=_json_dumps)
    connect_args = {"check_same_thread": False}
    if _is_sqlite_memory(url):
        # An in-memory database lives as long as its one connection, so every thread shares it.
        engine = create_engine(
            url,
            poolclass=StaticPool,
            connect_args=connect_args,
            json_serializer=_json_dumps,
        )
    else:
        if url.database and not url.query.get("uri"):
            Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            poolclass=QueuePool,
            pool_size=5,
            max_overflow=10,
            pool_timeout=30,
            connect_args=connect_args,
            json_serializer=_json_dumps,
        )
    event.listen(engine, "connect", _set_sqlite_pragmas)
    return engine


class SQLStore:
    """Sessions, their end summaries and live snapshots in a SQL database.

    Synchronous and safe to call from several worker threads at once: each call takes its own
    pooled connection and transaction. ``recover`` is meant to run once at start-up.

    Raises :class:`~framebroker.errors.ConfigError` at construction when the database was
    written by a newer framebroker (its schema version is higher than :data:`SCHEMA_VERSION`).
    """

    def __init__(self, url: str) -> None:
        self._url = make_url(url)
        self._engine = _engine_for(self._url)
        # A shared in-memory connection must not interleave two threads' transactions.
        self._serial: contextlib.AbstractContextManager[Any] = (
            threading.Lock()
            if self._url.get_backend_name() == "sqlite" and _is_sqlite_memory(self._url)
            else contextlib.nullcontext()
        )
        self._closed = False
        try:
            self._prepare_schema()
        except BaseException:
            self._engine.dispose()
            raise

    def __repr__(self) -> str:
        return f"SQLStore({self._url.render_as_string(hide_password=True)!r})"

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, for maintenance and inspection; the store owns it."""
        return self._engine

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        if self._closed:
            raise RuntimeError("the store is closed")
        with self._serial, self._engine.begin() as conn:
            yield conn

    # -- schema ----------------------------------------------------------------------------

    def _prepare_schema(self) -> None:
        """Create missing tables, refuse a newer database, and migrate an older one."""
        with self.transaction() as conn:
            # Read the version before touching other tables: a newer schema may have renamed
            # them, and creating ours beside them would leave a database neither version reads.
            schema_version.create(conn, checkfirst=True)
            found = conn.execute(
                select(schema_version.c.version).where(schema_version.c.id == 1)
            ).scalar_one_or_none()
            if found is not None and found > SCHEMA_VERSION:
                shown = self._url.render_as_string(hide_password=True)
                raise ConfigError(
                    f"database {shown} has schema version {found}, newer than version "
                    f"{SCHEMA_VERSION} that this framebroker knows; upgrade framebroker or "
                    "point database_url at another database"
                )
            if found is None:
                metadata.create_all(conn)
                self._insert_or_ignore(
                    conn, schema_version, {"id": 1, "version": SCHEMA_VERSION}, ["id"]
                )
                return
            for version in range(found, SCHEMA_VERSION):
                step = _MIGRATIONS.get(version)
                if step is None:
                    raise ConfigError(
                        f"no migration from schema version {version} to {version + 1}"
                    )
                step(conn)
            metadata.create_all(conn)
            conn.execute(
                update(schema_version)
                .where(schema_version.c.id == 1)
                .values(version=SCHEMA_VERSION)
            )

    # -- dialect-aware writes ------------------------------------------------------------------

    def _upsert_insert(self, table: Table) -> sqlite.Insert | postgresql.Insert | None:
        """An ``INSERT`` that can take ``ON CONFLICT``, where the backend has one."""
        name = self._engine.dialect.name
        if name == "sqlite":
            return sqlite.insert(table)
        if name == "postgresql":
            return postgresql.insert(table)
        return None

    def _insert_or_ignore(
        self, conn: Connection, table: Table, values: dict[str, Any], keys: list[str]
    ) -> None:
        stmt = self._upsert_insert(table)
        if stmt is not None:
            conn.execute(stmt.values(**values).on_conflict_do_nothing(index_elements=keys))
            return
        where = [table.c[k] == values[k] for k in keys]
        if conn.execute(select(*(table.c[k] for k in keys)).where(*where)).first() is None:
            conn.execute(insert(table).values(**values))

    # -- Store -------------------------------------------------------------------------------

    def session_started(self, session_id: str, info: dict[str, Any]) -> None:
        """Record a new active session; a record already there (even an ended one) is kept."""
        values = {
            "id": session_id,
            "transport": str(info.get("transport", "")),
            "pipeline": list(info.get("pipeline", [])),
            "state": ACTIVE,
            "created_at": float(info.get("created_at", time.time())),
            "ended_at": None,
            "info": info,
            "summary": None,
        }
        with self.transaction() as conn:
            self._insert_or_ignore(conn, sessions, values, ["id"])

    def session_ended(self, summary: SessionSummary) -> None:
        """Mark the session ended with ``summary``; the first end recorded wins.

        Works without a prior ``session_started`` (the record is created from the summary).
        The session's snapshot is deleted: an ended session is never resumed.
        """
        body = summary.to_dict()
        values = {
            "id": summary.id,
            "transport": summary.transport,
            "pipeline": list(summary.pipeline),
            "state": ENDED,
            "created_at": summary.created_at,
            "ended_at": summary.ended_at,
            "info": {
                "id": summary.id,
                "transport": summary.transport,
                "pipeline": list(summary.pipeline),
                "created_at": summary.created_at,
            },
            "summary": body,
        }
        ending = {"state": ENDED, "ended_at": summary.ended_at, "summary": body}
        with self.transaction() as conn:
            stmt = self._upsert_insert(sessions)
            if stmt is not None:
                stmt = stmt.values(**values)
                conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["id"],
                        set_={name: stmt.excluded[name] for name in ending},
                        where=sessions.c.state == ACTIVE,
                    )
                )
            else:
                ended = conn.execute(
                    update(sessions)
                    .where(sessions.c.id == summary.id, sessions.c.state == ACTIVE)
                    .values(**ending)
                )
                if ended.rowcount == 0:
                    self._insert_or_ignore(conn, sessions, values, ["id"])
            conn.execute(
                delete(session_snapshots).where(session_snapshots.c.session_id == summary.id)
            )

    def get_session(self, session_id: str) -> dict[str, Any] | None:
        """The record of ``session_id``, or ``None`` when the store has never seen it."""
        with self.transaction() as conn:
            row = conn.execute(select(sessions).where(sessions.c.id == session_id)).first()
        return None if row is None else _record(row._mapping)

    def list_sessions(self, *, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """Records, newest first (by ``created_at``). Raises ``ValueError`` on negative bounds."""
        if limit < 0 or offset < 0:
            raise ValueError(f"limit and offset must be >= 0, got limit={limit} offset={offset}")
        query = (
            select(sessions)
            .order_by(sessions.c.created_at.desc(), sessions.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        with self.transaction() as conn:
            rows = conn.execute(query).all()
        return [_record(row._mapping) for row in rows]

    def save_snapshot(self, session_id: str, snapshot: dict[str, Any]) -> None:
        """Keep ``snapshot`` as the session's latest state, replacing any earlier one."""
        values = {"session_id": session_id, "snapshot": snapshot, "updated_at": time.time()}
        with self.transaction() as conn:
            stmt = self._upsert_insert(session_snapshots)
            if stmt is not None:
                stmt = stmt.values(**values)
                conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["session_id"],
                        set_={
                            "snapshot": stmt.excluded.snapshot,
                            "updated_at": stmt.excluded.updated_at,
                        },
                    )
                )
                return
            replaced = conn.execute(
                update(session_snapshots)
                .where(session_snapshots.c.session_id == session_id)
                .values(snapshot=snapshot, updated_at=values["updated_at"])
            )
            if replaced.rowcount == 0:
                conn.execute(insert(session_snapshots).values(**values))

    def load_snapshot(self, session_id: str) -> dict[str, Any] | None:
        """The latest snapshot saved for ``session_id``, or ``None``."""
        with self.transaction() as conn:
            found = conn.execute(
                select(session_snapshots.c.snapshot).where(
                    session_snapshots.c.session_id == session_id
                )
            ).scalar_one_or_none()
        return None if found is None else dict(found)

    def session_resumed(self, session_id: str) -> dict[str, Any] | None:
        """Take the snapshot of a suspended session and mark its record active again.

        Returns ``None`` (and changes nothing) when there is no snapshot. Taking is atomic:
        of two processes resuming the same session, one gets the snapshot.
        """
        with self.transaction() as conn:
            found = conn.execute(
                select(session_snapshots.c.snapshot).where(
                    session_snapshots.c.session_id == session_id
                )
            ).scalar_one_or_none()
            if found is None:
                return None
            taken = conn.execute(
                delete(session_snapshots).where(session_snapshots.c.session_id == session_id)
            )
            if taken.rowcount != 1:
                return None
            conn.execute(
                update(sessions)
                .where(sessions.c.id == session_id)
                .values(state=ACTIVE, ended_at=None, summary=None)
            )
        return dict(found)

    def recover(self) -> int:
        """End the sessions a previous process left active; returns how many.

        A session still ``active`` at start-up belonged to a process that died without ending
        it. Each gets ``state="ended"`` and a summary with ``reason="server_restarted"`` built
        from its stored info (which is kept as it was).
        """
        now = time.time()
        with self.transaction() as conn:
            orphans = conn.execute(
                select(
                    sessions.c.id,
                    sessions.c.transport,
                    sessions.c.pipeline,
                    sessions.c.created_at,
                    sessions.c.info,
                ).where(sessions.c.state == ACTIVE)
            ).all()
            recovered = 0
            for sid, transport, pipeline, created_at, info in orphans:
                summary = {
                    "id": sid,
                    "transport": transport,
                    "pipeline": pipeline,
                    "created_at": created_at,
                    "ended_at": now,
                    "reason": "server_restarted",
                    "stats": dict(info or {}).get("stats", {}),
                    "results": {},
                    "errors": [],
                }
                # The state guard keeps an end recorded meanwhile by another node.
                done = conn.execute(
                    update(sessions)
                    .where(sessions.c.id == sid, sessions.c.state == ACTIVE)
                    .values(state=ENDED, ended_at=now, summary=summary)
                )
                recovered += done.rowcount
        return recovered

    def close(self) -> None:
        """Release every pooled connection; later calls raise ``RuntimeError``. Idempotent."""
        if not self._closed:
            self._closed = True
            self._engine.dispose()


def _record(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "transport": row["transport"],
        "pipeline": row["pipeline"],
        "state": row["state"],
        "created_at": row["created_at"],
        "ended_at": row["ended_at"],
        "info": row["info"],
        "summary": row["summary"],
    }
