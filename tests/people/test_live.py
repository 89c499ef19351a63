from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from framebroker.people.config import LiveSettings, PeopleCounterSettings
from framebroker.people.live import (
    LiveFeed,
    end_interrupted_events,
    live_timestamp,
    local_day,
)
from framebroker.people.records import StagedCrop
from framebroker.plugins import ProcessorRegistry
from framebroker.sessions import FrameOut
from framebroker.storage import FaceFolder, SQLPeopleRecords, SQLStore

from ..fake_sessions import FakeSessions


async def inline(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


@pytest.fixture
async def feed(tmp_path: Path) -> AsyncIterator[tuple[LiveFeed, SQLPeopleRecords, FakeSessions]]:
    store = SQLStore(f"sqlite:///{tmp_path / 'live.sqlite3'}")
    records = SQLPeopleRecords(store)
    bus = sessions()
    live = LiveFeed(
        "cam", "s1", bus, inline, records,
        PeopleCounterSettings(), LiveSettings(max_fps=0, stats_interval_s=0.05),
        crops=FaceFolder(tmp_path / "faces"),
    )  # fmt: skip
    await live.start()
    yield live, records, bus
    await live.stop()
    store.close()


def sessions() -> FakeSessions:
    return FakeSessions(ProcessorRegistry())


def result(**outputs: Any) -> FrameOut:
    return FrameOut("s1", 0, outputs=outputs, timestamp=1_763_700_000.0)


async def test_frames_events_and_stats_are_published(
    feed: tuple[LiveFeed, SQLPeopleRecords, FakeSessions],
) -> None:
    live, records, bus = feed
    sub = bus.subscribe("live/cam/*")
    day = local_day(1_763_700_000.0, live.tz)
    await live.handle(
        result(
            annotated_image="QUJD",
            count_in=2,
            count_out=1,
            day=day,
            lines={"middle": {"in": 2, "out": 1}},
            event_active=True,
            current_event_count_in=2,
            daily_event_count=1,
            event={"status": "started", "start_time": "09:00:00"},
        )
    )
    await asyncio.sleep(0.12)
    topics = [m.topic for m in sub.drain()]
    assert "live/cam/frame" in topics
    assert "live/cam/event" in topics
    assert "live/cam/stats" in topics
    assert live.stats == {
        "count_in": 2, "count_out": 1, "face_count": 0, "daily_event_count": 1,
        "event_active": True, "current_event_count_in": 2,
    }  # fmt: skip
    await live.handle(
        result(event={"status": "ended", "start_time": "09:00:00", "end_time": "09:02:00",
                      "count_in": 14})
    )  # fmt: skip
    (event,) = records.events_on("cam", day)
    assert (event["end_time"], event["count_in"]) == ("09:02:00", 14)
    await live.stop()
    assert records.load_counts("cam", day) == {"middle": {"in": 2, "out": 1}}


async def test_faces_are_written_once_per_track_and_updated_in_place(
    feed: tuple[LiveFeed, SQLPeopleRecords, FakeSessions], tmp_path: Path
) -> None:
    live, records, _ = feed
    await live.handle(result(faces=[{"track_id": 7, "jpeg": b"first", "quality": 1.0}]))
    await live.handle(result(faces=[{"track_id": 8, "jpeg": b"other", "quality": 1.0}]))
    await live.handle(
        result(faces=[{"track_id": 7, "jpeg": b"better", "quality": 2.0, "update": True}])
    )
    faces = records.recent_faces()
    assert len(faces) == 2
    assert live.stats["face_count"] == 2
    by_track = {f["track_id"]: f for f in faces}
    assert (tmp_path / "faces" / by_track[7]["filename"]).read_bytes() == b"better"
    assert by_track[7]["quality"] == 2.0
    assert not list((tmp_path / "faces").glob("*.tmp"))


async def test_frame_rate_is_capped(tmp_path: Path) -> None:
    live = LiveFeed("cam", "s", sessions(), inline, None, live=LiveSettings(max_fps=5))
    for _ in range(20):
        await live.handle(result(annotated_image="QQ=="))
    assert live.frames_published == 1


def test_live_timestamp_format() -> None:
    from zoneinfo import ZoneInfo

    assert live_timestamp(0.25, ZoneInfo("UTC")) == "1970-01-01 00:00:00.250"
    assert live_timestamp(0.0, ZoneInfo("Asia/Tokyo")) == "1970-01-01 09:00:00.000"


async def test_crossings_are_kept_per_hour_and_a_restart_does_not_count_them_twice(
    tmp_path: Path,
) -> None:
    store = SQLStore(f"sqlite:///{tmp_path / 'hours.sqlite3'}")
    records = SQLPeopleRecords(store)
    people = PeopleCounterSettings(timezone="Europe/Paris")
    live_settings = LiveSettings(max_fps=0, stats_interval_s=60)
    nine = datetime(2026, 11, 21, 9, 30, tzinfo=ZoneInfo("Europe/Paris")).timestamp()
    day = "2026-11-21"

    def at(t: float, cin: int, cout: int) -> FrameOut:
        outputs = {"day": day, "lines": {"door": {"in": cin, "out": cout}}}
        return FrameOut("s1", 0, outputs=outputs, timestamp=t)

    live = LiveFeed("cam", "s1", sessions(), inline, records, people, live_settings)
    live.day = day
    await live.start()
    await live.handle(at(nine, 2, 0))
    await live.handle(at(nine + 600, 3, 1))
    await live.handle(at(nine + 3600, 5, 1))  # 10:30
    await live.stop()
    assert records.load_hourly("cam", day) == {(9, "door"): (3, 1), (10, "door"): (2, 0)}

    # A restart the same day: the counter resumes from 5/1, so only growth past it is new.
    again = LiveFeed("cam", "s2", sessions(), inline, records, people, live_settings)
    again.day = day
    await again.start()
    await again.handle(at(nine + 3700, 6, 1))
    await again.stop()
    assert records.load_hourly("cam", day) == {(9, "door"): (3, 1), (10, "door"): (3, 0)}
    assert records.hourly_totals("cam", day)[10] == {"hour": 10, "count_in": 3, "count_out": 0}
    store.close()


async def test_nothing_is_shown_before_it_is_stored(
    feed: tuple[LiveFeed, SQLPeopleRecords, FakeSessions], tmp_path: Path
) -> None:
    """Each message is checked against the store at the moment it is published: a crash
    right after it could not take back what it showed."""
    live, records, sessions = feed
    day = local_day(1_763_700_000.0, live.tz)
    checked: list[str] = []
    sub = sessions.bus.subscribe("live/cam/*")  # the bus itself, to check as it publishes

    def check() -> None:
        for message in sub.drain():
            kind = message.topic.rsplit("/", 1)[1]
            checked.append(kind)
            stored = records.load_counts("cam", day)
            assert sum(c["in"] for c in stored.values()) >= live.stats["count_in"]
            assert len(records.events_on("cam", day)) >= live.stats["daily_event_count"]
            assert records.count_faces(day, "cam") >= live.stats["face_count"]
            for row in records.recent_faces():
                assert (tmp_path / "faces" / row["filename"]).read_bytes() == b"face"
            if kind == "event":
                (event,) = records.events_on("cam", day)
                assert event["started_at"] == 1_763_700_000.0
            if kind == "frame":
                # The picture draws the counts: the stored ones are the drawn ones.
                assert stored == {"door": {"in": 3, "out": 1}}

    sub.wake = check
    await live.handle(
        result(
            annotated_image="QUJD", count_in=3, count_out=1, day=day,
            lines={"door": {"in": 3, "out": 1}}, daily_event_count=1, event_active=True,
            event={"status": "started", "start_time": "09:00:00"},
            faces=[{"track_id": 5, "jpeg": b"face", "quality": 1.0}],
        )
    )  # fmt: skip
    await asyncio.sleep(0.12)  # a stats tick
    assert {"frame", "event", "stats"} <= set(checked)
    assert live.stats["face_count"] == 1


async def test_a_face_whose_file_cannot_be_placed_is_not_indexed(
    feed: tuple[LiveFeed, SQLPeopleRecords, FakeSessions],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    live, records, _ = feed

    def full_disk(self: FaceFolder, staged: StagedCrop, name: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(FaceFolder, "place", full_disk)
    with pytest.raises(OSError, match="No space left"):
        await live.handle(result(faces=[{"track_id": 7, "jpeg": b"face", "quality": 1.0}]))
    assert records.recent_faces() == []
    assert live.stats["face_count"] == 0
    assert list((tmp_path / "faces").iterdir()) == []  # the staged file was removed


def test_events_a_crash_left_running_end_when_the_source_was_last_counted(
    tmp_path: Path,
) -> None:
    store = SQLStore(f"sqlite:///{tmp_path / 'events.sqlite3'}")
    records = SQLPeopleRecords(store)
    tz = ZoneInfo("Europe/Paris")
    assert end_interrupted_events(records, "cam", tz) == 0
    started = datetime(2026, 11, 21, 9, 0, tzinfo=tz).timestamp()
    eid = records.event_started(source="cam", day="2026-11-21", started_at=started,
                                start_time="09:00:00")  # fmt: skip
    records.save_counts("cam", "2026-11-21", {"door": {"in": 4, "out": 0}})
    last = records.last_counted_at("cam")
    assert last is not None
    assert end_interrupted_events(records, "cam", tz) == 1
    (event,) = records.events_on("cam", "2026-11-21")
    assert (event["id"], event["ended_at"], event["count_in"]) == (eid, max(last, started), None)
    assert event["end_time"] == datetime.fromtimestamp(event["ended_at"], tz).strftime("%H:%M:%S")
    assert end_interrupted_events(records, "cam", tz) == 0
    store.close()


async def test_a_feed_that_falls_behind_skips_frames_but_not_events(
    feed: tuple[LiveFeed, SQLPeopleRecords, FakeSessions],
) -> None:
    live, records, bus = feed
    day = local_day(1_763_700_000.0, live.tz)
    started = {"status": "started", "start_time": "09:00:00"}
    # Twenty results at once, faster than the feed follows (it keeps 4): the one that starts
    # an event is third, so a plain oldest-first mailbox would have dropped it.
    for i in range(20):
        outputs: dict[str, Any] = {"annotated_image": "QUJD", "day": day}
        if i == 2:
            outputs["event"] = started
        bus.publish("session/s1/result", result(**outputs))
    for _ in range(100):
        if records.events_on("cam", day):
            break
        await asyncio.sleep(0.02)
    (event,) = records.events_on("cam", day)
    assert event["start_time"] == "09:00:00"
    assert live._feed is not None
    assert live._feed.dropped >= 15  # frames were skipped all the same


@pytest.mark.parametrize(
    ("pipeline_fps", "cap", "expected"), [(40, 30, 30), (100, 30, 30), (20, 30, 20), (43, 15, 15)]
)
def test_frames_go_out_at_the_cap_on_average(
    pipeline_fps: float, cap: float, expected: float
) -> None:
    live = LiveFeed("cam", "s", sessions(), inline, None, live=LiveSettings(max_fps=cap))
    sent = sum(live._frame_due(1000.0 + k / pipeline_fps) for k in range(int(10 * pipeline_fps)))
    assert sent == pytest.approx(10 * expected, abs=2)


def test_frames_that_come_in_pairs_still_go_out_near_the_cap() -> None:
    # A 38 fps pipeline whose frames come two at a time, 5 ms apart.
    live = LiveFeed("cam", "s", sessions(), inline, None, live=LiveSettings(max_fps=30))
    times = [1000.0 + k * 2 / 38 + d for k in range(190) for d in (0.0, 0.005)]
    sent = [t for t in times if live._frame_due(t)]
    assert len(sent) / 10 == pytest.approx(30, abs=1.5)
    # Never more than the cap over any second.
    assert max(sum(t <= s < t + 1 for s in sent) for t in sent) <= 31


def test_a_pause_does_not_release_a_burst() -> None:
    live = LiveFeed("cam", "s", sessions(), inline, None, live=LiveSettings(max_fps=10))
    assert [live._frame_due(t) for t in (0.0, 0.05, 0.1)] == [True, False, True]
    # Five seconds without frames, then a fast pipeline: one frame, then the cap again.
    assert [live._frame_due(5.0 + k / 100) for k in range(12)] == [True] + [False] * 9 + [
        True,
        False,
    ]


async def test_a_restarted_feed_shows_the_days_totals_before_its_first_frame(
    tmp_path: Path,
) -> None:
    store = SQLStore(f"sqlite:///{tmp_path / 'restart.sqlite3'}")
    records = SQLPeopleRecords(store)
    sessions_ = sessions()
    live = LiveFeed(
        "cam", "s1", sessions_, inline, records, live=LiveSettings(stats_interval_s=0.05)
    )
    records.save_counts("cam", live.day, {"door": {"in": 4, "out": 2}, "gate": {"in": 1, "out": 0}})
    records.event_started(source="cam", day=live.day, started_at=1.0, start_time="09:00:00")
    watch = sessions_.subscribe("live/cam/stats")
    await live.start()
    try:
        await asyncio.wait_for(watch.wait(), 5)
        first = watch.drain()[0].payload["data"]
        assert (first["count_in"], first["count_out"], first["daily_event_count"]) == (5, 2, 1)
    finally:
        await live.stop()
        store.close()


async def test_while_the_database_is_away_nothing_new_is_shown_and_nothing_shown_is_lost(
    tmp_path: Path,
) -> None:
    """A real PostgreSQL stopped (``pg_ctl stop -m immediate``) under the feed: it keeps
    counting but shows only what is stored; started again, the held-back crossings and the
    event are stored, then shown, with no restart of the feed."""
    from ..postgres import running_postgres

    day = local_day(1_763_700_000.0, ZoneInfo("UTC"))
    with running_postgres() as pg:
        store = SQLStore(pg.url())
        records = SQLPeopleRecords(store)
        bus = sessions()
        sub = bus.subscribe("live/cam/*")
        live = LiveFeed(
            "cam", "s1", bus, inline, records,
            PeopleCounterSettings(), LiveSettings(max_fps=0, stats_interval_s=0.05),
        )  # fmt: skip
        await live.start()
        shown: list[tuple[str, Any]] = []

        async def tick_and_read() -> None:
            await asyncio.sleep(0.15)
            shown.extend((m.topic.rsplit("/", 1)[1], m.payload) for m in sub.drain())

        def counted(n: int, **more: Any) -> FrameOut:
            lines = {"door": {"in": n, "out": 0}}
            return result(annotated_image="QUJD", count_in=n, count_out=0, day=day,
                          lines=lines, **more)  # fmt: skip

        try:
            await live.handle(counted(1))
            await tick_and_read()
            assert live.stats["count_in"] == 1
            pg.stop("immediate")
            shown.clear()
            started = {"status": "started", "start_time": "09:00:00"}
            await live.handle(counted(2, daily_event_count=1, event_active=True, event=started))
            await live.handle(counted(3, daily_event_count=1, event_active=True))
            await tick_and_read()
            assert live.holding_back
            assert [kind for kind, _ in shown if kind != "stats"] == []  # no frame, no event
            assert {p["data"]["count_in"] for kind, p in shown if kind == "stats"} == {1}
            assert live.stats["daily_event_count"] == 0

            pg.start(pg.port)
            shown.clear()
            for _ in range(40):
                await tick_and_read()
                if not live.holding_back:
                    break
            assert not live.holding_back
            assert records.load_counts("cam", day) == {"door": {"in": 3, "out": 0}}
            assert [e["start_time"] for e in records.events_on("cam", day)] == ["09:00:00"]
            assert ("event", {"data": {"status": "started", "start_time": "09:00:00"}}) in [
                (kind, {"data": p["data"]}) for kind, p in shown
            ]
            assert live.stats["count_in"] == 3
            assert live.stats["daily_event_count"] == 1
            await live.handle(counted(4))  # frames go out again
            assert "live/cam/frame" in {m.topic for m in sub.drain()}
        finally:
            await live.stop()
            store.close()


async def test_a_run_whose_source_was_taken_over_stores_and_shows_no_more_counts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A holder cut off from the cluster keeps counting for a moment: once another run of
    the source claimed it, this one's counts are refused by the store and never shown."""
    store = SQLStore(f"sqlite:///{tmp_path / 'fenced.sqlite3'}")
    records = SQLPeopleRecords(store)
    day = local_day(1_763_700_000.0, ZoneInfo("UTC"))
    bus = sessions()
    sub = bus.subscribe("live/cam/*")
    live = LiveFeed(
        "cam", "s1", bus, inline, records,
        PeopleCounterSettings(), LiveSettings(max_fps=0, stats_interval_s=0.05),
        fence=records.claim_source("cam"),
    )  # fmt: skip
    await live.start()

    def counted(n: int) -> FrameOut:
        return result(annotated_image="QUJD", count_in=n, count_out=0, day=day,
                      lines={"door": {"in": n, "out": 0}})  # fmt: skip

    try:
        await live.handle(counted(1))
        assert records.load_counts("cam", day) == {"door": {"in": 1, "out": 0}}
        newer = records.claim_source("cam")  # another node took the source over
        records.save_counts("cam", day, {"door": {"in": 7, "out": 0}}, fence=newer)
        sub.drain()
        await live.handle(counted(2))
        await asyncio.sleep(0.15)  # a stats tick: the save is not tried again
        assert records.load_counts("cam", day) == {"door": {"in": 7, "out": 0}}
        assert live.holding_back
        shown = sub.drain()
        assert "live/cam/frame" not in {m.topic for m in shown}
        assert {m.payload["data"]["count_in"] for m in shown} <= {1}
        assert "kept by a later run of it (fence 2, this run's 1)" in caplog.text
    finally:
        await live.stop()
        store.close()
