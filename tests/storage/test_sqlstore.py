from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text

from framebroker.core.session import SessionSummary
from framebroker.core.store import Owner
from framebroker.errors import ConfigError, StaleOwner
from framebroker.storage import SQLStore, database_url, head

from .conftest import OpenStore


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    # A directory that does not exist yet: the store must create it.
    return tmp_path / "data" / "framebroker.sqlite3"


@pytest.fixture
def sqlite_store(db_path: Path) -> Iterator[SQLStore]:
    store = SQLStore(f"sqlite:///{db_path}")
    yield store
    store.close()


@pytest.fixture
def memory_store() -> Iterator[SQLStore]:
    store = SQLStore("sqlite://")
    yield store
    store.close()


def info_for(session_id: str, created_at: float = 1000.0) -> dict[str, Any]:
    return {
        "id": session_id,
        "transport": "live_ws",
        "pipeline": ["bytetrack", "line_counter"],
        "backpressure": "latest",
        "created_at": created_at,
        "idle_s": 0.0,
        "stats": {"frames_in": 3, "nested": {"ünïcode": [1, 2.5, None, True]}},
    }


def summary_for(
    session_id: str, *, created_at: float = 1000.0, ended_at: float = 1010.0, reason: str = "ended"
) -> SessionSummary:
    return SessionSummary(
        id=session_id,
        transport="live_ws",
        pipeline=["bytetrack", "line_counter"],
        created_at=created_at,
        ended_at=ended_at,
        reason=reason,
        stats={"frames_in": 10, "frames_processed": 9, "mean_latency_ms": {"bytetrack": 1.5}},
        results={"line_counter": {"in": 4, "out": 2, "by_class": {"0": 3, "2": 1}}},
        errors=[{"processor": "line_counter", "error": "ValueError: boom"}],
    )


def test_data_survives_restart(open_url_store: OpenStore) -> None:
    first = open_url_store()
    first.session_started("a", info_for("a"))
    first.session_ended(summary_for("a"))
    first.session_started("b", info_for("b", created_at=2000.0))
    first.save_snapshot("b", {"next_index": 7})
    first.close()

    second = open_url_store()
    a = second.get_session("a")
    assert a is not None
    assert a["state"] == "ended"
    assert a["summary"] == summary_for("a").to_dict()
    b = second.get_session("b")
    assert b is not None
    assert b["state"] == "active"
    assert second.load_snapshot("b") == {"next_index": 7}


def test_sqlite_pragmas(sqlite_store: SQLStore, db_path: Path) -> None:
    assert db_path.is_file()
    with sqlite_store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 5000
    # WAL is a property of the file, seen by any other connection too.
    with closing(sqlite3.connect(db_path)) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_round_trip_keeps_json(store: SQLStore) -> None:
    info = info_for("s1")
    store.session_started("s1", info)
    started = store.get_session("s1")
    assert started == {
        "id": "s1",
        "transport": "live_ws",
        "pipeline": ["bytetrack", "line_counter"],
        "state": "active",
        "created_at": 1000.0,
        "ended_at": None,
        "info": info,
        "summary": None,
        "owner": None,
        "epoch": None,
    }

    summary = summary_for("s1")
    store.session_ended(summary)
    ended = store.get_session("s1")
    assert ended is not None
    assert ended["state"] == "ended"
    assert ended["ended_at"] == 1010.0
    assert ended["info"] == info
    assert ended["summary"] == summary.to_dict()
    assert store.list_sessions() == [ended]
    assert store.get_session("nope") is None


def test_ended_without_start(store: SQLStore) -> None:
    store.session_ended(summary_for("late"))
    record = store.get_session("late")
    assert record is not None
    assert record["state"] == "ended"
    assert record["transport"] == "live_ws"
    assert record["created_at"] == 1000.0
    assert record["summary"]["reason"] == "ended"
    # The start recorded in the background after the end must not reopen the session.
    store.session_started("late", info_for("late"))
    again = store.get_session("late")
    assert again is not None
    assert again["state"] == "ended"


def test_ended_twice_keeps_first(store: SQLStore) -> None:
    store.session_started("x", info_for("x"))
    store.session_ended(summary_for("x", ended_at=1010.0, reason="disconnected"))
    store.session_ended(summary_for("x", ended_at=2020.0, reason="server_stopped"))
    record = store.get_session("x")
    assert record is not None
    assert record["ended_at"] == 1010.0
    assert record["summary"]["reason"] == "disconnected"


def test_numpy_values_are_stored(store: SQLStore) -> None:
    summary = SessionSummary(
        id="np",
        transport="rest",
        pipeline=["detect"],
        created_at=1.0,
        ended_at=2.0,
        reason="ended",
        stats={"mean": np.float32(0.5)},
        results={"counts": np.array([1, 2, 3])},
        errors=[],
    )
    store.session_ended(summary)
    record = store.get_session("np")
    assert record is not None
    assert record["summary"]["stats"] == {"mean": 0.5}
    assert record["summary"]["results"] == {"counts": [1, 2, 3]}


def test_list_newest_first_with_paging(store: SQLStore) -> None:
    for i in range(10):
        store.session_started(f"s{i}", info_for(f"s{i}", created_at=1000.0 + i))
    ids = [r["id"] for r in store.list_sessions()]
    assert ids == [f"s{i}" for i in range(9, -1, -1)]
    page = [r["id"] for r in store.list_sessions(limit=3, offset=2)]
    assert page == ["s7", "s6", "s5"]
    assert store.list_sessions(limit=5, offset=20) == []
    assert store.list_sessions(limit=0) == []
    with pytest.raises(ValueError, match="limit and offset"):
        store.list_sessions(limit=-1)


def test_snapshots(store: SQLStore) -> None:
    assert store.load_snapshot("s") is None
    store.save_snapshot("s", {"next_index": 1, "processors": {"bytetrack": {"tracks": [[1, 2]]}}})
    assert store.load_snapshot("s") == {
        "next_index": 1,
        "processors": {"bytetrack": {"tracks": [[1, 2]]}},
    }
    store.save_snapshot("s", {"next_index": 42, "processors": {}})
    assert store.load_snapshot("s") == {"next_index": 42, "processors": {}}
    # An ended session is never resumed, so its snapshot goes.
    store.session_started("s", info_for("s"))
    store.session_ended(summary_for("s"))
    assert store.load_snapshot("s") is None


def test_recover_ends_orphans(open_url_store: OpenStore) -> None:
    crashed = open_url_store()
    crashed.session_started("orphan1", info_for("orphan1"))
    crashed.session_started("orphan2", info_for("orphan2", created_at=1001.0))
    crashed.session_started("done", info_for("done"))
    crashed.session_ended(summary_for("done", reason="disconnected"))
    crashed.close()

    restarted = open_url_store()
    assert restarted.recover([]) == 2
    for sid in ("orphan1", "orphan2"):
        record = restarted.get_session(sid)
        assert record is not None
        assert record["state"] == "ended"
        assert record["ended_at"] is not None
        assert record["info"] == info_for(sid, created_at=record["created_at"])
        assert record["summary"]["reason"] == "server_restarted"
        assert record["summary"]["id"] == sid
        assert record["summary"]["stats"] == record["info"]["stats"]
    done = restarted.get_session("done")
    assert done is not None
    assert done["summary"]["reason"] == "disconnected"
    assert restarted.recover([]) == 0


def test_closed_store_refuses_calls(memory_store: SQLStore) -> None:
    memory_store.close()
    memory_store.close()
    with pytest.raises(RuntimeError, match="closed"):
        memory_store.get_session("x")


def test_concurrent_writers(url: str) -> None:
    many_writers(SQLStore(url))


def test_concurrent_writers_in_memory() -> None:
    many_writers(SQLStore("sqlite://"))


def many_writers(store: SQLStore) -> None:
    threads_n, per_thread = 8, 50
    start = threading.Barrier(threads_n, timeout=30)
    failures: list[BaseException] = []

    def write(t: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                sid = f"t{t}-{i}"
                store.session_started(sid, info_for(sid, created_at=float(t * per_thread + i)))
                if i % 2:
                    store.session_ended(summary_for(sid))
                store.save_snapshot(sid, {"i": i})
        except BaseException as exc:
            failures.append(exc)

    try:
        workers = [threading.Thread(target=write, args=(t,)) for t in range(threads_n)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=120)
        assert not any(w.is_alive() for w in workers)
        assert failures == []
        records = store.list_sessions(limit=10_000)
        assert len(records) == threads_n * per_thread
        assert {r["id"] for r in records} == {
            f"t{t}-{i}" for t in range(threads_n) for i in range(per_thread)
        }
        assert sum(r["state"] == "ended" for r in records) == threads_n * per_thread // 2
    finally:
        store.close()


def test_portable_path_without_on_conflict(
    store: SQLStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Backends other than SQLite and PostgreSQL get plain UPDATE/INSERT with the same rules."""
    memory_store = store
    monkeypatch.setattr(memory_store, "_upsert_insert", lambda table: None)
    memory_store.session_ended(summary_for("late", reason="first"))
    memory_store.session_started("late", info_for("late"))
    memory_store.session_ended(summary_for("late", reason="second"))
    late = memory_store.get_session("late")
    assert late is not None
    assert late["state"] == "ended"
    assert late["summary"]["reason"] == "first"

    memory_store.session_started("s", info_for("s"))
    memory_store.session_started("s", info_for("s", created_at=5.0))
    memory_store.session_ended(summary_for("s", reason="ended"))
    s = memory_store.get_session("s")
    assert s is not None
    assert (s["state"], s["created_at"], s["summary"]["reason"]) == ("ended", 1000.0, "ended")

    memory_store.save_snapshot("live", {"n": 1})
    memory_store.save_snapshot("live", {"n": 2})
    assert memory_store.load_snapshot("live") == {"n": 2}


def test_session_resumed_takes_the_snapshot_once_and_reactivates(url: str) -> None:
    store = SQLStore(url)
    try:
        assert store.session_resumed("nobody") is None
        store.session_started("s", {"transport": "rest", "pipeline": ["bytetrack"]})
        store.session_ended(_summary_for_resume("s"))
        store.save_snapshot("s", {"state": {"next_index": 7}})
        assert store.get_session("s")["state"] == "ended"  # type: ignore[index]
        assert store.session_resumed("s") == {"state": {"next_index": 7}}
        record = store.get_session("s")
        assert record is not None
        assert (record["state"], record["summary"], record["ended_at"]) == ("active", None, None)
        assert store.session_resumed("s") is None
        store.session_ended(_summary_for_resume("s", reason="deleted"))
        assert store.get_session("s")["summary"]["reason"] == "deleted"  # type: ignore[index]
    finally:
        store.close()


def _summary_for_resume(sid: str, reason: str = "server_stopped") -> SessionSummary:
    return SessionSummary(
        id=sid,
        transport="rest",
        pipeline=["bytetrack"],
        created_at=1.0,
        ended_at=2.0,
        reason=reason,
        stats={},
        results={},
        errors=[],
    )


def test_each_start_of_an_owner_is_a_new_epoch(open_url_store: OpenStore) -> None:
    assert open_url_store().begin("a") == Owner("a", 1)
    assert open_url_store().begin("a") == Owner("a", 2)
    assert open_url_store().begin("b") == Owner("b", 1)
    again = open_url_store()
    assert again.owner is None
    me = again.begin("a")
    assert (me, again.owner, me.earlier) == (Owner("a", 3), me, Owner("a", 2))
    again.session_started("s", info_for("s"))
    record = again.get_session("s")
    assert record is not None
    assert (record["owner"], record["epoch"]) == ("a", 3)


def test_recovery_ends_only_the_sessions_whose_owner_is_gone(open_url_store: OpenStore) -> None:
    """Two servers share a database; one restarts: only its previous life's sessions end."""
    legacy = open_url_store()  # never begun: as a database migrated from before owners
    legacy.session_started("old", info_for("old"))
    a1, b = open_url_store(), open_url_store()
    a1.begin("a")
    b.begin("b")
    a1.session_started("a-crashed", info_for("a-crashed"))
    b.session_started("b-alive", info_for("b-alive"))

    a2 = open_url_store()
    me = a2.begin("a")
    a2.session_started("a-new", info_for("a-new"))
    assert a2.recover([me.earlier]) == 2
    states = {sid: a2.get_session(sid) for sid in ("old", "a-crashed", "b-alive", "a-new")}
    assert {sid: r["state"] for sid, r in states.items() if r} == {
        "old": "ended", "a-crashed": "ended", "b-alive": "active", "a-new": "active",
    }  # fmt: skip
    assert states["a-crashed"]["summary"]["reason"] == "server_restarted"  # type: ignore[index]
    # b's own sessions end only when b is gone (in a cluster: its lease expired).
    assert a2.recover([Owner("b", 1)]) == 1
    assert a2.get_session("b-alive")["state"] == "ended"  # type: ignore[index]


def test_a_stale_owner_is_fenced_off_its_sessions(open_url_store: OpenStore) -> None:
    """Every write a session's owner makes is checked against the row's owner and epoch."""
    a1 = open_url_store()
    a1.begin("a")
    a1.session_started("moved", info_for("moved"))
    a1.session_started("taken", info_for("taken"))
    a1.session_ended(summary_for("moved", reason="server_stopped"))
    a1.save_snapshot("moved", {"state": {"next_index": 3}})

    b = open_url_store()
    b.begin("b")
    assert b.session_resumed("moved") == {"state": {"next_index": 3}}  # now b's
    with pytest.raises(StaleOwner, match="held by owner 'b' epoch 1"):
        a1.session_ended(summary_for("moved", reason="late"))
    with pytest.raises(StaleOwner):
        a1.save_snapshot("moved", {"state": {"next_index": 4}})
    assert b.load_snapshot("moved") is None
    b.session_ended(summary_for("moved", reason="ended by b"))
    assert b.get_session("moved")["summary"]["reason"] == "ended by b"  # type: ignore[index]

    # a's next life recovers "taken"; the old life, paused meanwhile, can no longer write it.
    a2 = open_url_store()
    assert a2.recover([a2.begin("a").earlier]) == 1
    with pytest.raises(StaleOwner):
        a1.save_snapshot("taken", {"state": {}})
    a1.session_ended(summary_for("taken", reason="late"))  # ended already: first end wins
    assert a2.get_session("taken")["summary"]["reason"] == "server_restarted"  # type: ignore[index]


def test_schema_is_at_the_newest_revision(store: SQLStore) -> None:
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == head()
        # framebroker from before Alembic reads this, and refuses a version it does not know.
        assert conn.execute(text("SELECT version FROM schema_version")).scalar() == 4


def test_ping(store: SQLStore) -> None:
    store.ping()
    store.close()
    with pytest.raises(RuntimeError, match="closed"):
        store.ping()


def test_a_database_not_a_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not a database URL"):
        SQLStore("not a url")


@pytest.mark.parametrize("scheme", ["postgresql", "postgresql+psycopg", "postgresql+asyncpg"])
def test_each_postgresql_url_runs_on_psycopg(scheme: str, new_postgres_database: Any) -> None:
    url = new_postgres_database().replace("postgresql://", f"{scheme}://")
    assert database_url(url).drivername == "postgresql+psycopg"
    store = SQLStore(url)
    try:
        store.session_started("s", info_for("s"))
        assert store.get_session("s") is not None
    finally:
        store.close()
