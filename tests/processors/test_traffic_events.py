"""TrafficEvents: events from in-crossings in a sliding window, by the frames' own clock."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from framebroker.core import Detections, Frame, Pipeline, ProcessContext
from framebroker.processors.line_counter import Line, LineCounter
from framebroker.processors.traffic_events import TrafficEvents

CTX = ProcessContext("test")
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=ZoneInfo("UTC")).timestamp()


def feed(events: TrafficEvents, t: float, n_in: int = 0, n_out: int = 0) -> dict[str, Any]:
    """One frame at ``t`` carrying ``n_in`` in and ``n_out`` out crossings."""
    crossings = [{"direction": "in", "line": "door", "track_id": i} for i in range(n_in)]
    crossings += [{"direction": "out", "line": "door", "track_id": i} for i in range(n_out)]
    out = events.process(Frame(meta={"timestamp": t}, results={"crossings": crossings}), CTX)
    assert out is not None
    return out


def messages(outs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o["event"] for o in outs if "event" in o]


def test_a_burst_starts_an_event_that_ends_after_the_cooldown() -> None:
    events = TrafficEvents(window_s=60, threshold=10, cooldown_s=30)
    outs = []
    for s in range(101):
        n = 1 if s < 10 or s in (20, 21) else 0
        outs.append(feed(events, T0 + s, n_in=n))
    assert [o["event_active"] for o in outs[8:11]] == [False, True, True]
    assert outs[9]["event"] == {"status": "started", "start_time": "12:00:09"}
    assert outs[9]["current_event_count_in"] == 10  # the burst that started it belongs to it
    assert outs[9]["daily_event_count"] == 1
    assert outs[21]["current_event_count_in"] == 12
    # In the window: crossings at 0..9, 20, 21. The one at 2 leaves it at 62 s, which brings
    # the count to 9 < 10; the event ends 30 s later.
    assert outs[91]["event_active"] is True
    assert outs[92]["event"] == {
        "status": "ended",
        "start_time": "12:00:09",
        "end_time": "12:01:32",
        "count_in": 12,
    }
    assert (outs[92]["event_active"], outs[92]["current_event_count_in"]) == (False, 0)
    assert outs[100]["daily_event_count"] == 1
    assert len(messages(outs)) == 2


def test_the_cooldown_starts_when_the_count_falls_even_between_frames() -> None:
    events = TrafficEvents(window_s=10, threshold=3, cooldown_s=5)
    feed(events, T0, n_in=3)  # starts; falls below at T0 + 10
    assert feed(events, T0 + 12.0)["event_active"] is True  # below since T0 + 10
    assert feed(events, T0 + 15.0)["event"]["end_time"] == "12:00:15"


def test_a_dip_shorter_than_the_cooldown_keeps_the_event_going() -> None:
    events = TrafficEvents(window_s=10, threshold=3, cooldown_s=5)
    outs = [feed(events, T0 + s, n_in=3 if s in (0, 13) else 0) for s in range(40)]
    # Below from 10 s, back at 13 s (before 15 s), below again from 23 s, ends at 28 s.
    assert messages(outs) == [
        {"status": "started", "start_time": "12:00:00"},
        {"status": "ended", "start_time": "12:00:00", "end_time": "12:00:28", "count_in": 6},
    ]


def test_out_crossings_and_stray_entries_do_not_count() -> None:
    events = TrafficEvents(window_s=60, threshold=2, cooldown_s=0)
    assert feed(events, T0, n_out=5)["event_active"] is False
    frame = Frame(meta={"timestamp": T0 + 1}, results={"crossings": ["in", {"direction": "x"}]})
    out = events.process(frame, CTX)
    assert out is not None
    assert out["event_active"] is False
    assert events.process(Frame(meta={"timestamp": T0 + 2}), CTX) == {
        "event_active": False,
        "current_event_count_in": 0,
        "daily_event_count": 0,
    }


def test_daily_event_count_resets_at_local_midnight() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    evening = datetime(2024, 3, 10, 23, 0, 0, tzinfo=berlin).timestamp()
    events = TrafficEvents(window_s=10, threshold=3, cooldown_s=5, timezone="Europe/Berlin")
    outs = [feed(events, evening + s, n_in=3 if s in (0, 100) else 0) for s in range(200)]
    assert [m["status"] for m in messages(outs)] == ["started", "ended"] * 2
    assert outs[-1]["daily_event_count"] == 2
    assert messages(outs)[0]["start_time"] == "23:00:00"  # local, not UTC (22:00)
    midnight = datetime(2024, 3, 11, 0, 0, 0, tzinfo=berlin).timestamp()
    assert feed(events, midnight - 0.5)["daily_event_count"] == 2
    assert feed(events, midnight + 0.5)["daily_event_count"] == 0
    out = feed(events, midnight + 1, n_in=3)
    assert (out["daily_event_count"], out["event"]["start_time"]) == (1, "00:00:01")
    summary = events.end(CTX)
    assert summary == {
        "traffic_events": {
            "day": "2024-03-11",
            "daily_event_count": 1,
            "event": {
                "status": "ended",
                "start_time": "00:00:01",
                "end_time": "00:00:01",
                "count_in": 3,
            },
        }
    }


def test_an_event_running_over_midnight_goes_on_and_counts_on_its_own_day() -> None:
    midnight = datetime(2024, 5, 2, tzinfo=ZoneInfo("UTC")).timestamp()
    events = TrafficEvents(window_s=60, threshold=3, cooldown_s=30)
    assert feed(events, midnight - 1, n_in=3)["daily_event_count"] == 1
    out = feed(events, midnight + 1, n_in=1)
    assert (out["event_active"], out["current_event_count_in"], out["daily_event_count"]) == (
        True,
        4,
        0,
    )


def test_end_closes_an_active_event_at_the_last_frame() -> None:
    events = TrafficEvents(window_s=60, threshold=2, cooldown_s=30)
    feed(events, T0, n_in=2)
    feed(events, T0 + 5, n_in=1)
    assert events.end(CTX) == {
        "traffic_events": {
            "day": "2024-05-01",
            "daily_event_count": 1,
            "event": {
                "status": "ended",
                "start_time": "12:00:00",
                "end_time": "12:00:05",
                "count_in": 3,
            },
        }
    }
    assert events.event_active is False
    idle = TrafficEvents()
    assert idle.end(CTX) == {"traffic_events": {"day": None, "daily_event_count": 0}}


def test_initial_resumes_the_day_count() -> None:
    same = TrafficEvents(threshold=1, initial={"day": "2024-05-01", "daily_event_count": 4})
    assert feed(same, T0)["daily_event_count"] == 4
    assert feed(same, T0 + 1, n_in=1)["daily_event_count"] == 5
    later = TrafficEvents(threshold=1, initial={"day": "2024-04-30", "daily_event_count": 4})
    assert feed(later, T0)["daily_event_count"] == 0


def test_the_window_is_pruned() -> None:
    events = TrafficEvents(window_s=5, threshold=1_000_000, cooldown_s=0)
    largest = 0
    for i in range(10_000):
        feed(events, T0 + i * 0.1, n_in=1)
        largest = max(largest, events.window_len)
    assert largest <= 51  # the frames of the last 5 s at 10 fps
    feed(events, T0 + 10_000)
    assert events.window_len == 0


def test_snapshot_round_trip_through_json_mid_event() -> None:
    def burst(s: int) -> int:
        return 2 if s % 50 < 10 else 0

    straight = TrafficEvents(window_s=8, threshold=6, cooldown_s=4)
    expected = [feed(straight, T0 + s, n_in=burst(s)) for s in range(200)]
    first = TrafficEvents(window_s=8, threshold=6, cooldown_s=4)
    got = [feed(first, T0 + s, n_in=burst(s)) for s in range(55)]
    assert first.event_active
    state = json.loads(json.dumps(first.snapshot()))
    second = TrafficEvents(window_s=8, threshold=6, cooldown_s=4)
    second.restore(state)
    got += [feed(second, T0 + s, n_in=burst(s)) for s in range(55, 200)]
    assert got == expected
    assert len(messages(got)) == 8
    with pytest.raises(ValueError, match="version"):
        second.restore({})
    with pytest.raises(ValueError, match="window"):
        second.restore({**state, "window": [[1.0, -1]]})


def test_events_from_a_line_counter_in_a_pipeline() -> None:
    door = Line("door", (0.0, 240.0), (640.0, 240.0), "right")
    pipeline = Pipeline(
        [LineCounter(lines=[door]), TrafficEvents(window_s=10, threshold=5, cooldown_s=5)]
    )
    outs = []
    for i in range(200):  # 10 fps; 8 people walk down through the door together
        ys = [200.0 + 10 * i] * 8 if i < 10 else []
        xs = [40.0 + 70 * k for k in range(len(ys))]
        dets = Detections.from_arrays(
            np.array([[x - 10, y - 40, x + 10, y] for x, y in zip(xs, ys, strict=True)]),
            np.ones(len(ys)),
            track_id=list(range(1, len(ys) + 1)),
        )
        frame = Frame(detections=dets, meta={"timestamp": T0 + i / 10}, index=i)
        outs.append(pipeline.run(frame, CTX).outputs)
    assert outs[7]["count_in"] == 8
    assert outs[7]["event"] == {"status": "started", "start_time": "12:00:00"}
    assert (outs[7]["event_active"], outs[7]["current_event_count_in"]) == (True, 8)
    ended = [o["event"] for o in outs if o.get("event", {}).get("status") == "ended"]
    assert ended == [
        {"status": "ended", "start_time": "12:00:00", "end_time": "12:00:15", "count_in": 8}
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window_s": 0}, "window_s must be a finite number of seconds > 0"),
        ({"window_s": float("inf")}, "window_s"),
        ({"threshold": 0}, "threshold must be an integer >= 1"),
        ({"threshold": 2.0}, "threshold"),
        ({"cooldown_s": -1}, "cooldown_s must be a finite number of seconds >= 0"),
        ({"timezone": "Nowhere/Else"}, "IANA name"),
        ({"initial": {"day": "2024-05-01"}}, "initial must be"),
        ({"initial": {"day": "May 1", "daily_event_count": 1}}, "YYYY-MM-DD"),
        ({"initial": {"day": "2024-05-01", "daily_event_count": -1}}, "integer >= 0"),
    ],
)
def test_bad_arguments_are_rejected_with_a_clear_message(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        TrafficEvents(**kwargs)
