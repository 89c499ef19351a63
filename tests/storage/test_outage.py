"""A real PostgreSQL that goes away under the store: stopped (``pg_ctl stop -m immediate``, a
crash) or killed (SIGKILL to the postmaster), then started again. The store answers
``StoreUnavailable`` meanwhile and works again by itself once the server is back."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from framebroker.errors import StoreUnavailable
from framebroker.storage import SQLPeopleRecords, SQLStore, open_store

from ..in_process import free_port
from ..postgres import PostgresServer, running_postgres
from .test_sqlstore import info_for, summary_for


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    """A server of this module's own: stopping it must not disturb the other tests."""
    with running_postgres() as server:
        yield server


@pytest.mark.parametrize("fault", ["stop -m immediate", "kill -9"])
def test_the_store_comes_back_by_itself(own_postgres: PostgresServer, fault: str) -> None:
    store = SQLStore(own_postgres.url(), pool=None)
    records = SQLPeopleRecords(store)
    try:
        store.session_started("before", info_for("before"))
        records.save_counts("cam", "2026-11-21", {"door": {"in": 1, "out": 0}})
        if fault == "kill -9":
            own_postgres.kill()
        else:
            own_postgres.stop("immediate")
        for call in (
            store.ping,
            lambda: store.session_ended(summary_for("before")),
            lambda: records.save_counts("cam", "2026-11-21", {"door": {"in": 2, "out": 0}}),
            lambda: store.get_session("before"),
        ):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="cannot be reached") as away:
                call()
            assert time.monotonic() - started < 3  # refused at once, not hung
            assert away.value.http_status == 503
            assert away.value.code == "store_unavailable"
        own_postgres.start(own_postgres.port)
        store.ping()
        store.session_ended(summary_for("before"))
        assert store.get_session("before")["state"] == "ended"  # type: ignore[index]
        records.save_counts("cam", "2026-11-21", {"door": {"in": 2, "out": 0}})
        assert records.load_counts("cam", "2026-11-21") == {"door": {"in": 2, "out": 0}}
    finally:
        store.close()


def test_an_unreachable_database_is_reported_at_open() -> None:
    with pytest.raises(StoreUnavailable):
        open_store(f"postgresql://nobody@127.0.0.1:{free_port()}/none")
