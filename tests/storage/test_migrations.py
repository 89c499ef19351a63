"""The Alembic revisions, run on SQLite and on PostgreSQL: from an empty database, one step at
a time, and from a database of framebroker before Alembic (schema versions 1 and 2)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, text

from framebroker.errors import ConfigError
from framebroker.storage import (
    SQLPeopleRecords,
    SQLStore,
    database_url,
    head,
    inspect_database,
    migrations,
    open_store,
    upgrade_database,
)
from framebroker.storage.schema import metadata

from .legacy_schema import write_version_1

REVISIONS = ["0001", "0002", "0003", "0004"]


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    parsed = database_url(url)
    if parsed.database and parsed.get_backend_name() == "sqlite":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    made = create_engine(parsed)
    yield made
    made.dispose()


def differences(engine: Engine) -> list[object]:
    """What stands between the database and ``schema.py`` (Alembic's autogenerate check)."""
    with engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))


def test_every_revision_in_turn_from_empty(url: str, engine: Engine) -> None:
    assert inspect_database(url).status == "empty"
    assert head() == REVISIONS[-1]
    for revision in REVISIONS:
        with engine.begin() as conn:
            migrations.upgrade(conn, revision)
        assert inspect_database(url).revision == revision
    assert differences(engine) == []
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version FROM schema_version")).scalar() == 4


def test_an_empty_database_is_created_at_start(url: str, engine: Engine) -> None:
    open_store(url).close()
    assert inspect_database(url).status == "current"
    assert differences(engine) == []


def test_the_newest_revision_goes_down_and_up_again(url: str, engine: Engine) -> None:
    open_store(url).close()
    with engine.begin() as conn:
        from alembic import command

        command.downgrade(migrations._config(conn), "0003")
    assert inspect_database(url).revision == "0003"
    with engine.begin() as conn:
        migrations.upgrade(conn)
    assert differences(engine) == []


@pytest.mark.parametrize("version", [1, 2])
def test_a_database_from_before_alembic_is_upgraded_only_when_told(
    url: str, engine: Engine, version: int
) -> None:
    write_version_1(engine, version=version)
    state = inspect_database(url)
    assert (state.revision, state.legacy, state.status) == (
        REVISIONS[version - 1],
        version,
        "older",
    )
    told = r"older than 0004; back it up, then run `framebroker db upgrade` \(or serve with"
    with pytest.raises(ConfigError, match=told):
        open_store(url)
    assert inspect_database(url).revision == REVISIONS[version - 1]  # untouched

    before, after = upgrade_database(url)
    assert (before.legacy, after) == (version, head())
    assert differences(engine) == []

    # The rows are all there; the session left active belonged to a process that is gone.
    store = SQLStore(url)
    try:
        assert store.get_session("done")["summary"] == {"id": "done", "reason": "deleted"}  # type: ignore[index]
        cut = store.get_session("cut")
        assert cut is not None
        assert (cut["state"], cut["owner"]) == ("active", None)
        assert store.recover([store.begin("node").earlier]) == 1
        assert store.get_session("cut")["summary"]["stats"] == {"frames_in": 4}  # type: ignore[index]
        records = SQLPeopleRecords(store)
        assert records.load_counts("cam", "2026-11-21") == {"door": {"in": 12, "out": 3}}
        assert records.face_filenames() == {"face_1.jpg"}
        assert [e["start_time"] for e in records.open_events("cam")] == ["09:00:00"]
        assert (
            records.add_face(source="cam", track_id=8, day="2026-11-21", quality=1, score=1)[0] == 2
        )
    finally:
        store.close()


def test_a_newer_database_is_refused_in_one_line(url: str, engine: Engine) -> None:
    open_store(url).close()
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    with pytest.raises(ConfigError) as refused:
        open_store(url, migrate=True)
    assert "\n" not in refused.value.message
    assert "is at schema revision 0099, newer than 0004 that this framebroker knows" in str(
        refused.value
    )
    with pytest.raises(ConfigError, match="newer"):
        upgrade_database(url)


def test_a_newer_database_from_before_alembic_is_refused(url: str, engine: Engine) -> None:
    write_version_1(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE schema_version SET version = 9"))
    with pytest.raises(
        ConfigError, match="unknown \\(schema version 9, from before Alembic\\), newer"
    ):
        open_store(url, migrate=True)


def test_nodes_starting_together_on_an_empty_database(url: str, backend: str) -> None:
    """Nodes of a cluster may start at once: one creates the schema, the others wait for it."""
    if backend == "sqlite":
        pytest.skip("one server per SQLite file")
    start = threading.Barrier(4, timeout=30)
    failures: list[BaseException] = []

    def open_one() -> None:
        try:
            start.wait()
            open_store(url).close()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []
    assert inspect_database(url).status == "current"
