"""The :class:`~framebroker.core.store.Store` on SQLAlchemy Core: SQLite (WAL) or PostgreSQL.

The core only knows the ``Store`` protocol; every SQL statement of framebroker lives in this
package. SQLite is the default because a single node needs no database server; PostgreSQL
serves when several nodes share one store (``postgresql://`` URLs run on psycopg 3), and
nothing SQLite-specific (pragmas, the in-memory pool) runs there.

Writes that race are made atomic with ``INSERT ... ON CONFLICT`` on SQLite and PostgreSQL, so a
session's end may land before its start (the runtime records the start in the background) and
the first end recorded is the one kept.

A database that cannot be reached (a server restarting, a network gone) makes any call raise
:class:`~framebroker.errors.StoreUnavailable`; every transaction checks its connection out of
the pool with a ping first, so once the database is back the next call works, with no restart.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson
from sqlalchemy import (
    Connection,
    Engine,
    Table,
    and_,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    true,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool, StaticPool

from ..core.session import SessionSummary
from ..core.store import Owner
from ..errors import ConfigError, StaleOwner, StoreUnavailable
from . import migrations
from .schema import ACTIVE, ENDED, owners, session_snapshots, sessions

__all__ = ["PoolLimits", "SQLStore", "database_url"]

log = logging.getLogger(__name__)

_SQLITE_PRAGMAS: Final = (
    # WAL lets readers run while one writer commits; NORMAL is durable across process crashes
    # in WAL mode and much cheaper than FULL.
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    # Face crops kept in the database go with their face's row (ON DELETE CASCADE).
    "PRAGMA foreign_keys=ON",
    # Worker threads write concurrently; wait for the lock instead of failing at once.
    "PRAGMA busy_timeout=5000",
)

_MIGRATION_LOCK: Final = 0x6662_726B_0016
"""PostgreSQL advisory lock key held while a node checks or migrates the schema, so that
nodes starting together on an empty database do not both create it."""

_POSTGRES_DRIVERS: Final = ("postgresql", "postgres", "postgresql+asyncpg")
"""URL schemes served with psycopg 3: the bare names (SQLAlchemy would pick psycopg2) and
asyncpg's, whose driver is asyncio-only while the store runs in worker threads."""

# What a lost, refused or overloaded database raises; anything else is a bug or bad data.
_UNAVAILABLE: Final = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)


@dataclass(frozen=True, slots=True)
class PoolLimits:
    """The connection pool (``[limits]`` ``db_pool_size``, ``db_pool_overflow``,
    ``db_timeout_s``): connections kept open, extra ones opened under load, and the longest
    wait for a connection, from the pool or from the database server."""

    size: int = 5
    overflow: int = 5
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if self.size < 1 or self.overflow < 0 or not self.timeout_s > 0:
            raise ValueError(
                f"pool: size >= 1, overflow >= 0 and timeout_s > 0, got size={self.size} "
                f"overflow={self.overflow} timeout_s={self.timeout_s}"
            )


def database_url(url: str) -> URL:
    """Parse a SQLAlchemy URL, with PostgreSQL's on psycopg 3 (see the module).

    Raises :class:`~framebroker.errors.ConfigError` for text that is no database URL.
    """
    try:
        parsed = make_url(url)
    except (sa_exc.ArgumentError, ValueError) as exc:
        raise ConfigError(f"database_url: not a database URL ({exc})") from None
    if parsed.drivername in _POSTGRES_DRIVERS:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


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


def _engine_for(url: URL, pool: PoolLimits) -> Engine:
    """Build the engine; SQLite gets its pool and pragmas, other backends a pinged pool."""
    shown = url.render_as_string(hide_password=True)
    if url.get_backend_name() != "sqlite":
        connect_args: dict[str, Any] = {}
        if url.get_backend_name() == "postgresql":
            connect_args = {
                # libpq counts whole seconds, and 1 means 2.
                "connect_timeout": max(2, math.ceil(pool.timeout_s)),
                # A server cut off mid-query (not refusing: gone) is noticed by the kernel
                # instead of after TCP's own quarter of an hour: data unacknowledged past
                # the timeout, or an idle connection not answering keepalives for ~11 s.
                "tcp_user_timeout": math.ceil(pool.timeout_s * 1000),
                "keepalives": 1,
                "keepalives_idle": 5,
                "keepalives_interval": 2,
                "keepalives_count": 3,
            }
        try:
            return create_engine(
                url,
                # A server restarted under a long-running node is noticed per checkout
                # (one round trip) instead of failing the next write.
                pool_pre_ping=True,
                pool_size=pool.size,
                max_overflow=pool.overflow,
                pool_timeout=pool.timeout_s,
                connect_args=connect_args,
                json_serializer=_json_dumps,
            )
        except ModuleNotFoundError as exc:
            extra = " (pip install 'framebroker[postgres]')" if "psycopg" in str(exc) else ""
            raise ConfigError(
                f"database_url {shown}: its driver is not installed: {exc}{extra}"
            ) from None
        except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError) as exc:
            raise ConfigError(f"database_url {shown}: {exc}") from None
    sqlite_args = {"check_same_thread": False}
    if _is_sqlite_memory(url):
        # An in-memory database lives as long as its one connection, so every thread shares it.
        engine = create_engine(
            url,
            poolclass=StaticPool,
            connect_args=sqlite_args,
            json_serializer=_json_dumps,
        )
    else:
        if url.database and not url.query.get("uri"):
            Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            poolclass=QueuePool,
            pool_size=pool.size,
            max_overflow=pool.overflow,
            pool_timeout=pool.timeout_s,
            connect_args=sqlite_args,
            json_serializer=_json_dumps,
        )
    event.listen(engine, "connect", _set_sqlite_pragmas)
    return engine


class SQLStore:
    """Sessions, their end summaries and live snapshots in a SQL database.

    Synchronous and safe to call from several worker threads at once: each call takes its own
    pooled connection and transaction. :meth:`begin` and :meth:`recover` are meant to run once
    at start-up.

    Opening checks the schema (see :mod:`.migrations`): an empty database is created; one at
    an older revision is upgraded only with ``migrate`` (else ``ConfigError`` says how); one
    newer than this code is refused with ``ConfigError``. Raises ``StoreUnavailable`` when the
    database cannot be reached.
    """

    def __init__(self, url: str, *, migrate: bool = False, pool: PoolLimits | None = None) -> None:
        self._url = database_url(url)
        self._engine = _engine_for(self._url, pool or PoolLimits())
        # A shared in-memory connection must not interleave two threads' transactions.
        self._serial: contextlib.AbstractContextManager[Any] = (
            threading.Lock()
            if self.dialect == "sqlite" and _is_sqlite_memory(self._url)
            else contextlib.nullcontext()
        )
        self._local = threading.local()
        self._owner: Owner | None = None
        self._closed = False
        try:
            self._prepare_schema(migrate)
        except StoreUnavailable as exc:
            self._engine.dispose()
            cause = exc.__cause__
            why = str(getattr(cause, "orig", None) or cause or exc).strip().splitlines() or ["?"]
            raise StoreUnavailable(f"cannot reach database {self.shown_url}: {why[0]}") from None
        except BaseException:
            self._engine.dispose()
            raise

    def __repr__(self) -> str:
        return f"SQLStore({self.shown_url!r})"

    @property
    def shown_url(self) -> str:
        """The URL with its password hidden, for messages."""
        return self._url.render_as_string(hide_password=True)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, for maintenance and inspection; the store owns it."""
        return self._engine

    @property
    def dialect(self) -> str:
        """``sqlite``, ``postgresql``, ...: the database's kind."""
        return self._engine.dialect.name

    @property
    def owner(self) -> Owner | None:
        """The life :meth:`begin` started; ``None`` before (writes are then not fenced)."""
        return self._owner

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One transaction, committed when the block ends without an exception.

        Re-entrant per thread: a transaction opened inside another on the same thread joins
        it, so that a step run inside a write (placing a face's crop) commits with it.
        Raises ``StoreUnavailable`` when the database cannot be reached or used.
        """
        if self._closed:
            raise RuntimeError("the store is closed")
        held: Connection | None = getattr(self._local, "conn", None)
        if held is not None:
            yield held
            return
        try:
            with self._serial, self._engine.begin() as conn:
                self._local.conn = conn
                try:
                    yield conn
                finally:
                    self._local.conn = None
        except _UNAVAILABLE as exc:
            log.debug("database %s unavailable: %s", self.shown_url, exc)
            raise StoreUnavailable(
                "the database cannot be reached or used right now; nothing was stored, retry later"
            ) from exc

    # -- schema ----------------------------------------------------------------------------

    def _prepare_schema(self, migrate: bool) -> None:
        """Create an empty database, refuse a newer one, upgrade an older one if told to."""
        with self.transaction() as conn:
            if self.dialect == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
            state = migrations.schema_state(conn)
            status = state.status
            if status == "current":
                return
            if status == "newer":
                raise ConfigError(
                    f"database {self.shown_url} is at schema revision {state.describe()}, "
                    f"newer than {migrations.head()} that this framebroker knows; upgrade "
                    "framebroker or point database_url at another database"
                )
            if status == "older" and not migrate:
                raise ConfigError(
                    f"database {self.shown_url} is at schema revision {state.describe()}, "
                    f"older than {migrations.head()}; back it up, then run `framebroker db "
                    "upgrade` (or serve with --migrate)"
                )
            migrations.upgrade(conn)
            if status == "empty":
                log.info("database %s created at %s", self.shown_url, migrations.head())
            else:
                log.info(
                    "database %s upgraded from %s to %s",
                    self.shown_url,
                    state.describe(),
                    migrations.head(),
                )

    # -- dialect-aware writes ------------------------------------------------------------------

    def _upsert_insert(self, table: Table) -> sqlite.Insert | postgresql.Insert | None:
        """An ``INSERT`` that can take ``ON CONFLICT``, where the backend has one."""
        name = self.dialect
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

    # -- owners ------------------------------------------------------------------------------

    def begin(self, owner_id: str) -> Owner:
        """Start the next life of ``owner_id`` (its epoch + 1; the first is 1) and fence
        every later write of this store by it (see :mod:`framebroker.core.store`)."""
        now = time.time()
        with self.transaction() as conn:
            stmt = self._upsert_insert(owners)
            if stmt is not None:
                stmt = stmt.values(id=owner_id, epoch=1, started_at=now)
                epoch = conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["id"],
                        set_={"epoch": owners.c.epoch + 1, "started_at": now},
                    ).returning(owners.c.epoch)
                ).scalar_one()
            else:
                bumped = conn.execute(
                    update(owners)
                    .where(owners.c.id == owner_id)
                    .values(epoch=owners.c.epoch + 1, started_at=now)
                )
                if bumped.rowcount == 0:
                    conn.execute(insert(owners).values(id=owner_id, epoch=1, started_at=now))
                epoch = conn.execute(
                    select(owners.c.epoch).where(owners.c.id == owner_id)
                ).scalar_one()
        self._owner = Owner(owner_id, int(epoch))
        return self._owner

    def _stamp(self) -> dict[str, Any]:
        me = self._owner
        return {"owner": None if me is None else me.id, "epoch": None if me is None else me.epoch}

    def _mine(self) -> Any:
        """The condition "this row may be written by this store": held by this life, or by
        no one (recorded before owners, or by a store never begun)."""
        me = self._owner
        if me is None:
            return true()
        return or_(
            sessions.c.owner.is_(None),
            and_(sessions.c.owner == me.id, sessions.c.epoch == me.epoch),
        )

    def _stale(self, session_id: str, holder: Any) -> StaleOwner:
        me = self._owner
        return StaleOwner(
            f"session {session_id!r} is held by owner {holder.owner!r} epoch {holder.epoch}, "
            f"not by this process ({None if me is None else me.id!r} epoch "
            f"{None if me is None else me.epoch})"
        )

    def _fence(self, conn: Connection, session_id: str) -> None:
        """Raise ``StaleOwner`` unless this store may write for ``session_id``; the row (if
        any) stays locked until the transaction ends, so it cannot change hands meanwhile."""
        if self._owner is None:
            return
        # A write first: it takes the row's lock on PostgreSQL and the write lock on SQLite
        # (a read first could not upgrade to a write without a race).
        conn.execute(
            update(sessions).where(sessions.c.id == session_id).values(epoch=sessions.c.epoch)
        )
        holder = conn.execute(
            select(sessions.c.owner, sessions.c.epoch).where(sessions.c.id == session_id)
        ).first()
        if holder is None or holder.owner is None:
            return
        if (holder.owner, holder.epoch) != (self._owner.id, self._owner.epoch):
            raise self._stale(session_id, holder)

    def recover(self, gone: Sequence[Owner], *, reason: str = "server_restarted") -> int:
        """End the sessions left active by an owner that is gone; returns how many.

        Those recorded by an owner of ``gone`` at its epoch or before, and those recorded with
        no owner (before migration 0003, or by a store never begun), each get
        ``state="ended"`` and a summary with ``reason`` built from its
        stored info (which is kept as it was), and pass to this store's owner: a gone owner
        still writing is fenced off them. Sessions of owners not named, alive elsewhere, are
        left alone.
        """
        now = time.time()
        whose = [sessions.c.owner.is_(None)] + [
            and_(sessions.c.owner == o.id, sessions.c.epoch <= o.epoch) for o in gone
        ]
        with self.transaction() as conn:
            orphans = conn.execute(
                select(
                    sessions.c.id,
                    sessions.c.transport,
                    sessions.c.pipeline,
                    sessions.c.created_at,
                    sessions.c.info,
                ).where(sessions.c.state == ACTIVE, or_(*whose))
            ).all()
            recovered = 0
            for sid, transport, pipeline, created_at, info in orphans:
                summary = {
                    "id": sid,
                    "transport": transport,
                    "pipeline": pipeline,
                    "created_at": created_at,
                    "ended_at": now,
                    "reason": reason,
                    "stats": dict(info or {}).get("stats", {}),
                    "results": {},
                    "errors": [],
                }
                # The guards keep an end recorded meanwhile, and a session resumed elsewhere.
                # The row passes to the recoverer, so that the gone owner, should it still
                # be writing (paused, cut off), is fenced off it.
                done = conn.execute(
                    update(sessions)
                    .where(sessions.c.id == sid, sessions.c.state == ACTIVE, or_(*whose))
                    .values(state=ENDED, ended_at=now, summary=summary, **self._stamp())
                )
                recovered += done.rowcount
        return recovered

    def ping(self) -> None:
        """Return when the database answers a query; else raise ``StoreUnavailable``."""
        with self.transaction() as conn:
            conn.execute(select(1))

    # -- Store -------------------------------------------------------------------------------

    def session_started(self, session_id: str, info: dict[str, Any]) -> None:
        """Record a new active session of this owner; a record already there (even an ended
        one) is kept."""
        values = {
            "id": session_id,
            "transport": str(info.get("transport", "")),
            "pipeline": list(info.get("pipeline", [])),
            "state": ACTIVE,
            "created_at": float(info.get("created_at", time.time())),
            "ended_at": None,
            "info": info,
            "summary": None,
            **self._stamp(),
        }
        with self.transaction() as conn:
            self._insert_or_ignore(conn, sessions, values, ["id"])

    def session_ended(self, summary: SessionSummary) -> None:
        """Mark the session ended with ``summary``; the first end recorded wins.

        Works without a prior ``session_started`` (the record is created from the summary).
        The session's snapshot is deleted: an ended session is never resumed. Raises
        ``StaleOwner`` (and changes nothing) when the session is active under another owner
        or epoch.
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
            **self._stamp(),
        }
        ending = {"state": ENDED, "ended_at": summary.ended_at, "summary": body}
        endable = and_(sessions.c.state == ACTIVE, self._mine())
        with self.transaction() as conn:
            stmt = self._upsert_insert(sessions)
            if stmt is not None:
                stmt = stmt.values(**values)
                written = conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["id"],
                        set_={name: stmt.excluded[name] for name in ending},
                        where=endable,
                    ),
                    # An INSERT's rowcount is kept only when asked for (0: nothing written).
                    execution_options={"preserve_rowcount": True},
                ).rowcount
            else:
                written = conn.execute(
                    update(sessions).where(sessions.c.id == summary.id, endable).values(**ending)
                ).rowcount
                if written == 0:
                    before = conn.execute(
                        select(sessions.c.id).where(sessions.c.id == summary.id)
                    ).first()
                    if before is None:
                        conn.execute(insert(sessions).values(**values))
                        written = 1
            if written == 0:
                holder = conn.execute(
                    select(sessions.c.owner, sessions.c.epoch).where(
                        sessions.c.id == summary.id, sessions.c.state == ACTIVE
                    )
                ).first()
                if holder is not None:
                    raise self._stale(summary.id, holder)
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
        """Keep ``snapshot`` as the session's latest state, replacing any earlier one. Raises
        ``StaleOwner`` (and keeps nothing) when the session is held by another owner or
        epoch."""
        values = {"session_id": session_id, "snapshot": snapshot, "updated_at": time.time()}
        with self.transaction() as conn:
            self._fence(conn, session_id)
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
        """Take the snapshot of a suspended session and mark its record active again, held
        by this store's owner.

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
                .values(state=ACTIVE, ended_at=None, summary=None, **self._stamp())
            )
        return dict(found)

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
        "owner": row["owner"],
        "epoch": row["epoch"],
    }
