"""The store's writes on SQLite and on PostgreSQL over loopback: what the people counter writes
per crossing and per new face, and what ending a ``/v1`` session costs, in the store and as a
client sees it (``DELETE /v1/sessions/{id}`` on a real server).

SQLite is the default store (WAL, ``synchronous=NORMAL``: a commit writes the WAL without an
fsync); PostgreSQL is a throwaway cluster of Debian's ``postgresql`` package started here with
its default durability (each commit waits for its WAL fsync), as a server a cluster would
share, and again with ``synchronous_commit = off`` on the database (a commit waits for no
fsync, as SQLite's here: a crash of the database's machine may lose the last fraction of a
second). Each operation runs ``--repeat`` times after a few unmeasured ones; the table gives
p50 and p99 milliseconds.

    python benchmarks/bench_store.py [--repeat 300]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from _server import framebroker_server

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.postgres

from tests.postgres import running_postgres

from framebroker.core.session import SessionSummary
from framebroker.storage import (
    SQLPeopleRecords,
    SQLStore,
    face_crops_for,
)

DAY = "2026-11-21"
WARM_UP = 10
JPEG = bytes(range(256)) * 40  # a face crop is ~10 KB


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1e3, p99 * 1e3


def timed(step: Callable[[int], object], repeat: int) -> tuple[float, float]:
    for i in range(WARM_UP):
        step(-1 - i)
    samples = []
    for i in range(repeat):
        started = time.perf_counter()
        step(i)
        samples.append(time.perf_counter() - started)
    return percentiles(samples)


def summary(session_id: str) -> SessionSummary:
    return SessionSummary(
        id=session_id, transport="rest", pipeline=["bytetrack"], created_at=1.0, ended_at=2.0,
        reason="deleted", stats={"frames_in": 30, "frames_processed": 30},
        results={"bytetrack": {"tracks": 12}}, errors=[],
    )  # fmt: skip


def store_rows(url: str, faces_dir: Path, repeat: int) -> dict[str, tuple[float, float]]:
    """Each operation as the runtime makes it, from one thread."""
    store = SQLStore(url)
    store.begin("bench")
    records = SQLPeopleRecords(store)
    crops = face_crops_for(store, faces_dir)
    rows: dict[str, tuple[float, float]] = {}
    try:

        def crossing(i: int) -> None:
            # What LiveFeed stores on a frame where someone crossed: the day's totals of
            # each line and its crossings per hour, replacing the day's rows.
            n = i + WARM_UP + 1
            lines = {"door": {"in": n, "out": n // 2}, "gate": {"in": n // 3, "out": 1}}
            hours = {(h, line): (n, n // 2) for h in range(8, 12) for line in ("door", "gate")}
            records.save_counts("cam", DAY, lines, hours)

        def new_face(i: int) -> None:
            staged = crops.stage(JPEG)
            records.add_face(
                source="cam", track_id=i, day=DAY, quality=1.0, score=0.9,
                place=lambda name: crops.place(staged, name),
            )  # fmt: skip

        def session_end(i: int) -> None:
            sid = f"s{i}"
            store.session_started(sid, {"transport": "rest", "pipeline": ["bytetrack"]})
            started = time.perf_counter()
            store.ping()  # the broker asks before it ends a session
            store.session_ended(summary(sid))
            ended.append(time.perf_counter() - started)

        rows["crossing: counts of 2 lines + 8 hours"] = timed(crossing, repeat)
        rows["new face: row + crop"] = timed(new_face, repeat)
        ended: list[float] = []
        timed(session_end, repeat)
        rows["/v1 session end: store (ping + end)"] = percentiles(ended[WARM_UP:])
    finally:
        store.close()
    return rows


def http_row(database_url: str | None, repeat: int) -> tuple[float, float]:
    """``DELETE /v1/sessions/{id}`` on a real server, each session with one frame tracked."""
    args = ("--database-url", database_url) if database_url else ()
    with framebroker_server(*args) as (url, _pid), httpx.Client(base_url=url) as client:
        boxes = {"boxes": [[10, 10, 40, 80, 0.9, 0], [200, 40, 40, 80, 0.8, 0]]}

        def end(_: int) -> None:
            sid = client.post("/v1/sessions", json={"pipeline": ["bytetrack"]}).json()["id"]
            client.post(f"/v1/sessions/{sid}/frames", json=boxes).raise_for_status()
            started = time.perf_counter()
            client.delete(f"/v1/sessions/{sid}").raise_for_status()
            deleted.append(time.perf_counter() - started)

        deleted: list[float] = []
        timed(end, repeat)
        return percentiles(deleted[WARM_UP:])


@contextmanager
def sqlite_url() -> Iterator[tuple[str, Path]]:
    with tempfile.TemporaryDirectory() as folder:
        yield f"sqlite:///{folder}/framebroker.sqlite3", Path(folder) / "faces"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=300)
    args = parser.parse_args()
    results: dict[str, dict[str, tuple[float, float]]] = {}
    with sqlite_url() as (url, faces):
        results["SQLite"] = store_rows(url, faces, args.repeat)
    results["SQLite"]["/v1 session end: DELETE over HTTP"] = http_row(None, args.repeat)
    with running_postgres(durable=True) as pg, tempfile.TemporaryDirectory() as folder:
        for column, synchronous in (("PostgreSQL", "on"), ("PG no fsync wait", "off")):
            name = f"bench_{synchronous}"
            url = pg.create_database(name)
            pg.execute(f"ALTER DATABASE {name} SET synchronous_commit = {synchronous}")
            results[column] = store_rows(url, Path(folder), args.repeat)
            results[column]["/v1 session end: DELETE over HTTP"] = http_row(url, args.repeat)
            pg.drop_database(name)

    print(f"store writes, ms ({args.repeat} each; PostgreSQL {pg_version()} on loopback)\n")
    head = f"{'operation':38}" + "".join(f" {c + ' p50':>21} {'p99':>6}" for c in results)
    print(head)
    for name in results["SQLite"]:
        cells = "".join(f" {results[c][name][0]:21.2f} {results[c][name][1]:6.2f}" for c in results)
        print(f"{name:38}{cells}")
    return 0


def pg_version() -> str:
    from tests.postgres import find_bindir

    return find_bindir().parent.name


if __name__ == "__main__":
    sys.exit(main())
