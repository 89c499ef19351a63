"""Fixtures every test folder may use: a real PostgreSQL server, started once per test run
when a test first asks for it (see :mod:`tests.postgres`)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .postgres import PostgresNotFound, PostgresServer, running_postgres

BACKENDS = ["sqlite", "postgresql"]
"""What the store's tests and the crash-safety test run on (``@pytest.mark.parametrize``)."""


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the whole run. Skips where PostgreSQL is not installed,
    unless ``FRAMEBROKER_REQUIRE_POSTGRES=1`` (``scripts/test.sh`` sets it: CI installs it)."""
    try:
        with running_postgres() as server:
            yield server
    except PostgresNotFound as exc:
        if os.environ.get("FRAMEBROKER_REQUIRE_POSTGRES") == "1":
            raise
        pytest.skip(str(exc))


@pytest.fixture
def new_postgres_database(postgres: PostgresServer) -> Iterator[Callable[[], str]]:
    """Makes empty databases on the shared server (a URL each), dropped after the test."""
    made: list[str] = []

    def make() -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        made.append(name)
        return postgres.create_database(name)

    yield make
    for name in made:
        postgres.drop_database(name)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each test that asks runs twice: on SQLite, then on PostgreSQL."""
    return str(request.param)


@pytest.fixture
def empty_database(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The URL of an empty database of ``backend``: a SQLite file in a folder not made yet
    (the store makes it), or a new PostgreSQL database."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'framebroker.sqlite3'}"
    make: Callable[[], str] = request.getfixturevalue("new_postgres_database")
    return make()
