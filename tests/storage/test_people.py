from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from framebroker.errors import StaleOwner
from framebroker.storage import SQLPeopleRecords, SQLStore, face_filename

from .conftest import OpenStore


@pytest.fixture
def records(store: SQLStore) -> SQLPeopleRecords:
    return SQLPeopleRecords(store)


def test_faces_get_server_made_ids_and_names(records: SQLPeopleRecords) -> None:
    a = records.add_face(source="cam", track_id=4, day="2026-11-21", quality=1.0, score=0.9)
    b = records.add_face(source="cam", track_id=5, day="2026-11-21", quality=2.0, score=0.8)
    assert a == (a[0], f"face_{a[0]}.jpg")
    assert b[0] == a[0] + 1
    face = records.get_face(a[0])
    assert face is not None
    assert (face["track_id"], face["filename"]) == (4, a[1])
    assert records.get_face(9999) is None
    assert [f["face_id"] for f in records.recent_faces(10)] == [b[0], a[0]]
    assert [f["face_id"] for f in records.recent_faces(1)] == [b[0]]
    records.update_face(a[0], quality=3.0, score=0.95)
    updated = records.get_face(a[0])
    assert updated is not None
    assert updated["quality"] == 3.0


def test_faces_page_by_id_newest_first(records: SQLPeopleRecords) -> None:
    ids = [
        records.add_face(source="cam", track_id=k, day="2026-11-21", quality=1, score=1)[0]
        for k in range(5)
    ]
    assert [f["face_id"] for f in records.faces_page(2)] == [ids[4], ids[3]]
    assert [f["face_id"] for f in records.faces_page(2, before=ids[3])] == [ids[2], ids[1]]
    assert [f["face_id"] for f in records.faces_page(9, before=ids[1])] == [ids[0]]
    assert records.faces_page(9, before=ids[0]) == []
    with pytest.raises(ValueError, match="limit must be >= 0, got -1"):
        records.faces_page(-1)


def test_face_count_per_day_and_retention(records: SQLPeopleRecords) -> None:
    for day in ["2026-11-19", "2026-11-20", "2026-11-21", "2026-11-21"]:
        records.add_face(source="cam", track_id=1, day=day, quality=1, score=1)
    assert records.count_faces("2026-11-21") == 2
    assert records.count_faces("2026-11-21", source="other") == 0
    gone = records.expire_faces(keep=3, min_day="2026-11-20")
    assert gone == ["face_1.jpg"]
    gone = records.expire_faces(keep=2, min_day="2026-11-01")
    assert gone == ["face_2.jpg"]
    assert len(records.recent_faces()) == 2


def test_counts_survive_and_replace(open_url_store: OpenStore) -> None:
    records = SQLPeopleRecords(open_url_store())
    records.save_counts("cam", "2026-11-21", {"door": {"in": 3, "out": 1}})
    records.save_counts("cam", "2026-11-21", {"door": {"in": 5, "out": 2}, "gate": {"in": 1}})
    again = SQLPeopleRecords(open_url_store())
    assert again.load_counts("cam", "2026-11-21") == {
        "door": {"in": 5, "out": 2},
        "gate": {"in": 1, "out": 0},
    }
    assert again.load_counts("cam", "2026-11-22") == {}


def test_events(records: SQLPeopleRecords) -> None:
    eid = records.event_started(
        source="cam", day="2026-11-21", started_at=10.0, start_time="09:00:00"
    )
    records.event_ended(eid, ended_at=70.0, end_time="09:01:00", count_in=12)
    (event,) = records.events_on("cam", "2026-11-21")
    assert (event["start_time"], event["end_time"], event["count_in"]) == (
        "09:00:00",
        "09:01:00",
        12,
    )


def test_file_names_come_from_integers_only() -> None:
    assert face_filename(7) == "face_7.jpg"
    with pytest.raises(ValueError, match="invalid literal"):
        face_filename("../etc/passwd")  # type: ignore[arg-type]


def test_hourly_counts_replace_the_day_and_sum_for_a_chart(records: SQLPeopleRecords) -> None:
    records.save_counts(
        "cam", "2026-11-21", {"a": {"in": 3, "out": 1}}, {(9, "a"): (2, 1), (13, "a"): (1, 0)}
    )
    records.save_counts("cam", "2026-11-21", {"a": {"in": 3, "out": 1}, "b": {"in": 4, "out": 0}},
                        {(9, "a"): (2, 1), (13, "a"): (1, 0), (13, "b"): (4, 0)})  # fmt: skip
    records.save_counts("cam", "2026-11-22", {}, {(0, "a"): (7, 7)})
    assert records.load_hourly("cam", "2026-11-21") == {
        (9, "a"): (2, 1), (13, "a"): (1, 0), (13, "b"): (4, 0),
    }  # fmt: skip
    chart = records.hourly_totals("cam", "2026-11-21")
    assert len(chart) == 24
    assert chart[9] == {"hour": 9, "count_in": 2, "count_out": 1}
    assert chart[13] == {"hour": 13, "count_in": 5, "count_out": 0}
    assert sum(row["count_in"] for row in chart) == 7
    # Counts saved without hours leave the stored hours alone.
    records.save_counts("cam", "2026-11-21", {"a": {"in": 9, "out": 9}})
    assert records.load_hourly("cam", "2026-11-21")[(13, "b")] == (4, 0)
    assert records.load_hourly("other", "2026-11-21") == {}


def test_a_face_is_indexed_only_once_its_file_is_in_place(
    records: SQLPeopleRecords, tmp_path: Path
) -> None:
    placed: list[str] = []

    def place(name: str) -> None:
        # Inside the transaction: the row exists for this connection, not yet for others
        # (another thread reads on a connection of its own).
        with ThreadPoolExecutor(1) as other:
            assert other.submit(records.recent_faces).result() == []
        placed.append(name)

    face_id, name = records.add_face(
        source="cam", track_id=1, day="2026-11-21", quality=1, score=1, place=place
    )
    assert placed == [name] == [face_filename(face_id)]

    def fail(name: str) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        records.add_face(source="cam", track_id=2, day="2026-11-21", quality=1, score=1, place=fail)
    assert [f["face_id"] for f in records.recent_faces()] == [face_id]
    assert records.face_filenames() == {name}


def test_events_left_open_and_when_counts_were_last_stored(records: SQLPeopleRecords) -> None:
    assert records.last_counted_at("cam") is None
    records.save_counts("cam", "2026-11-21", {"door": {"in": 1, "out": 0}})
    last = records.last_counted_at("cam")
    assert last is not None
    assert records.last_counted_at("other") is None
    done = records.event_started(source="cam", day="2026-11-21", started_at=10.0, start_time="a")
    records.event_ended(done, ended_at=20.0, end_time="b", count_in=3)
    running = records.event_started(source="cam", day="2026-11-21", started_at=30.0, start_time="c")
    records.event_started(source="yard", day="2026-11-21", started_at=40.0, start_time="d")
    assert [e["id"] for e in records.open_events("cam")] == [running]
    records.event_ended(running, ended_at=50.0, end_time="e", count_in=None)
    assert records.open_events("cam") == []
    assert records.events_on("cam", "2026-11-21")[-1]["count_in"] is None


def test_a_later_run_of_a_source_fences_an_earlier_runs_counts(
    records: SQLPeopleRecords,
) -> None:
    day = "2026-12-04"
    first = records.claim_source("door")
    records.save_counts("door", day, {"a": {"in": 3, "out": 1}}, fence=first)
    second = records.claim_source("door")  # the source taken over: a new run
    assert second > first
    assert records.claim_source("other") == 1  # fences are per source
    records.save_counts("door", day, {"a": {"in": 4, "out": 1}}, fence=second)
    # The earlier run, cut off while committing, cannot overwrite the later run's counts.
    with pytest.raises(StaleOwner, match="fence 2, this run's 1"):
        records.save_counts(
            "door", day, {"a": {"in": 9, "out": 9}}, {(8, "a"): (9, 9)}, fence=first
        )
    assert records.load_counts("door", day) == {"a": {"in": 4, "out": 1}}
    assert records.load_hourly("door", day) == {}
    # Unfenced saves (tools, tests) and the current run's go through.
    records.save_counts("door", day, {"a": {"in": 5, "out": 1}}, fence=second)
    records.save_counts("door", day, {"a": {"in": 6, "out": 1}})
    assert records.load_counts("door", day) == {"a": {"in": 6, "out": 1}}
