"""The store's tests run on SQLite and on a real PostgreSQL: ``url`` is a new, empty database
of each kind."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from framebroker.storage import SQLStore, open_store

OpenStore = Callable[[], SQLStore]


@pytest.fixture
def url(empty_database: str) -> str:
    return empty_database


@pytest.fixture
def open_url_store(url: str) -> Iterator[OpenStore]:
    """Opens stores on one database and closes every one of them, even when a test fails."""
    opened: list[SQLStore] = []

    def _open() -> SQLStore:
        store = open_store(url)
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.close()


@pytest.fixture
def store(open_url_store: OpenStore) -> SQLStore:
    return open_url_store()
