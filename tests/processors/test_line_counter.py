"""LineCounter on synthetic scenes whose crossings are known exactly."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from framebroker.core import Detections, Frame, Pipeline, ProcessContext
from framebroker.processors.line_counter import Line, LineCounter

CTX = ProcessContext("test")
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=ZoneInfo("UTC")).timestamp()
DT = 0.1
# A horizontal line across a 640x480 picture; in = below it (the right of start -> end).
DOOR = Line("door", (0.0, 240.0), (640.0, 240.0), "right")

Point = tuple[int, float, float]  # track id, anchor x, anchor y (bottom centre of the box)


def boxes(points: Sequence[Point], classes: Sequence[int] | None = None) -> Detections:
    """Boxes 20 x 40 px whose bottom centre is each point."""
    xyxy = [[x - 10.0, y - 40.0, x + 10.0, y] for _, x, y in points]
    return Detections.from_arrays(
        np.array(xyxy).reshape(-1, 4),
        np.ones(len(points)),
        class_id=classes,
        track_id=[tid for tid, _, _ in points],
    )


def frame(points: Sequence[Point], t: float, **meta: Any) -> Frame:
    return Frame(detections=boxes(points), meta={"timestamp": t, **meta})


def run(
    counter: LineCounter, scene: Sequence[Sequence[Point]], t0: float = T0, first: int = 0
) -> list[dict[str, Any]]:
    """Outputs of every frame of ``scene`` (a list of frames, each a list of points)."""
    outs = []
    for i, points in enumerate(scene, start=first):
        out = counter.process(frame(points, t0 + i * DT), CTX)
        assert out is not None
        outs.append(out)
    return outs


def walk(tid: int, x: float, ys: Sequence[float]) -> list[list[Point]]:
    return [[(tid, x, y)] for y in ys]


def crossings(outs: Sequence[dict[str, Any]]) -> list[tuple[int, int, str, str]]:
    """(frame number, track, line, direction) of every confirmed crossing."""
    return [
        (i, c["track_id"], c["line"], c["direction"])
        for i, out in enumerate(outs)
        for c in out["crossings"]
    ]


def test_people_walking_across_count_once_each_way() -> None:
    counter = LineCounter(lines=[DOOR])
    down = walk(1, 100.0, range(200, 300, 10))  # 200..290: below the line from y=250 on
    up = walk(2, 400.0, range(290, 190, -10))
    outs = run(counter, down + up)
    last = outs[-1]
    assert (last["count_in"], last["count_out"]) == (1, 1)
    assert last["lines"] == {"door": {"in": 1, "out": 1}}
    # y=240 is on the line and neither side: confirmed on the third sighting past it.
    assert crossings(outs) == [(7, 1, "door", "in"), (10 + 8, 2, "door", "out")]
    crossing = outs[7]["crossings"][0]
    assert crossing["timestamp"] == pytest.approx(T0 + 7 * DT)
    assert crossing["crossed_at"] == pytest.approx(T0 + 5 * DT)
    assert last["day"] == "2024-05-01"


def test_many_people_in_one_frame_each_count() -> None:
    counter = LineCounter(lines=[DOOR])
    scene = [[(tid, 20.0 + 30 * tid, 200.0 + 10 * step) for tid in range(15)] for step in range(10)]
    outs = run(counter, scene)
    assert (outs[-1]["count_in"], outs[-1]["count_out"]) == (15, 0)
    assert len(outs[7]["crossings"]) == 15


def test_jitter_on_the_line_counts_once() -> None:
    counter = LineCounter(lines=[DOOR])
    approach = [200.0, 210.0, 220.0, 230.0]
    jitter = [238.0, 242.0] * 10  # back and forth over the line, one frame each side
    leave = [250.0, 260.0, 270.0, 280.0]
    outs = run(counter, walk(1, 300.0, approach + jitter + leave))
    assert (outs[-1]["count_in"], outs[-1]["count_out"]) == (1, 0)
    assert len(crossings(outs)) == 1


def test_jitter_that_goes_back_counts_nothing() -> None:
    counter = LineCounter(lines=[DOOR])
    ys = [220.0, 230.0] + [238.0, 242.0, 243.0] * 5 + [230.0, 220.0, 210.0]
    outs = run(counter, walk(1, 300.0, ys))
    assert (outs[-1]["count_in"], outs[-1]["count_out"]) == (0, 0)


def test_an_id_switch_between_two_people_side_by_side_counts_each_once() -> None:
    # Two people walk down side by side; the tracker swaps their ids before the line, while
    # their crossings wait for confirmation, and after it. Each id stays on someone at the
    # same height, so each crossing still counts once.
    counter = LineCounter(lines=[DOOR], min_frames=3)
    swapped = {3, 6, 9}  # frame 5 crosses (y=250), 7 confirms
    scene: list[list[Point]] = []
    for k, y in enumerate(range(200, 310, 10)):
        a, b = (2, 1) if k in swapped else (1, 2)
        scene.append([(a, 300.0, float(y)), (b, 330.0, float(y))])
    outs = run(counter, scene)
    assert (outs[-1]["count_in"], outs[-1]["count_out"]) == (2, 0)
    assert [(i, tid) for i, tid, _, _ in crossings(outs)] == [(7, 1), (7, 2)]


def test_a_person_who_turns_back_on_the_line_counts_nothing() -> None:
    counter = LineCounter(lines=[DOOR], min_frames=3)
    approach = [210.0, 220.0, 230.0]
    on_the_line = [240.0] * 4 + [245.0, 248.0] + [240.0] * 3  # two steps over, then back
    back = [230.0, 220.0, 210.0]
    outs = run(counter, walk(1, 300.0, approach + on_the_line + back))
    assert (outs[-1]["count_in"], outs[-1]["count_out"]) == (0, 0)
    # Coming again later and going through counts that one crossing only.
    again = walk(1, 300.0, [230.0, 240.0, 250.0, 260.0, 270.0])
    outs = run(counter, again, first=len(approach + on_the_line + back))
    assert (outs[-1]["count_in"], outs[-1]["count_out"]) == (1, 0)


def test_going_around_the_end_of_a_short_line_does_not_count() -> None:
    short = Line("gate", (200.0, 240.0), (400.0, 240.0), "right")
    counter = LineCounter(lines=[short])
    around = walk(1, 150.0, range(200, 300, 10))  # left of the gate's end, top to bottom
    diagonal = [[(2, 150.0, 230.0)], [(2, 195.0, 250.0)], [(2, 195.0, 260.0)], [(2, 195.0, 270.0)]]
    outs = run(counter, around + diagonal)
    assert (outs[-1]["count_in"], outs[-1]["count_out"]) == (0, 0)


def test_after_going_around_a_crossing_back_through_counts_out() -> None:
    short = Line("gate", (200.0, 240.0), (400.0, 240.0), "right")
    counter = LineCounter(lines=[short])
    around = walk(1, 150.0, range(200, 300, 20))  # now below, without crossing the gate
    over = [[(1, 150.0 + 50 * k, 290.0)] for k in range(1, 4)]  # under the gate, to x=300
    back = walk(1, 300.0, range(280, 160, -20))  # up through the gate
    outs = run(counter, around + over + back)
    assert (outs[-1]["count_in"], outs[-1]["count_out"]) == (0, 1)


def test_crossing_then_returning_before_min_frames_counts_nothing() -> None:
    counter = LineCounter(lines=[DOOR], min_frames=3)
    ys = [220.0, 230.0, 250.0, 260.0, 230.0, 220.0, 210.0]  # two frames below, then back
    outs = run(counter, walk(1, 300.0, ys))
    assert (outs[-1]["count_in"], outs[-1]["count_out"]) == (0, 0)


def test_min_frames_one_counts_on_the_crossing_frame() -> None:
    counter = LineCounter(lines=[DOOR], min_frames=1)
    outs = run(counter, walk(1, 300.0, [220.0, 230.0, 250.0, 230.0]))
    assert crossings(outs) == [(2, 1, "door", "in"), (3, 1, "door", "out")]


def test_a_frame_exactly_on_the_line_neither_confirms_nor_cancels() -> None:
    counter = LineCounter(lines=[DOOR], min_frames=3)
    outs = run(counter, walk(1, 300.0, [220.0, 230.0, 240.0, 250.0, 240.0, 260.0, 270.0]))
    assert crossings(outs) == [(6, 1, "door", "in")]


def test_two_lines_count_separately_and_in_total() -> None:
    vertical = Line("aisle", (320.0, 0.0), (320.0, 480.0), "left")  # left of downwards = x>320
    counter = LineCounter(lines=[DOOR, vertical])
    diagonal = [[(1, 250.0 + 10 * k, 200.0 + 10 * k)] for k in range(12)]  # crosses both
    back_left = [[(2, 400.0 - 10 * k, 100.0)] for k in range(12)]  # crosses the aisle only
    outs = run(counter, diagonal + back_left)
    last = outs[-1]
    assert last["lines"] == {"door": {"in": 1, "out": 0}, "aisle": {"in": 1, "out": 1}}
    assert (last["count_in"], last["count_out"]) == (2, 1)
    assert sorted((c[1], c[2], c[3]) for c in crossings(outs)) == [
        (1, "aisle", "in"),
        (1, "door", "in"),
        (2, "aisle", "out"),
    ]


def test_center_anchor_uses_the_middle_of_the_box() -> None:
    # Boxes are 40 px tall: the centre crosses y=240 when the bottom crosses y=260.
    bottom = LineCounter(lines=[DOOR], anchor="bottom_center")
    center = LineCounter(lines=[DOOR], anchor="center")
    scene = walk(1, 300.0, [230.0, 245.0, 250.0, 255.0])
    assert run(bottom, scene)[-1]["count_in"] == 1
    assert run(center, scene)[-1]["count_in"] == 0


def test_untracked_and_filtered_detections_are_ignored() -> None:
    counter = LineCounter(lines=[DOOR], classes=[0])
    for i, y in enumerate(range(200, 300, 10)):
        points = [(-1, 100.0, float(y)), (5, 200.0, float(y)), (6, 300.0, float(y))]
        dets = boxes(points, classes=[0, 0, 2])
        out = counter.process(Frame(detections=dets, meta={"timestamp": T0 + i}), CTX)
    assert out is not None
    assert (out["count_in"], out["count_out"]) == (1, 0)


def test_frames_without_detections_still_report_counts() -> None:
    counter = LineCounter(lines=[DOOR])
    run(counter, walk(1, 300.0, range(200, 300, 10)))
    out = counter.process(Frame(meta={"timestamp": T0 + 100}), CTX)
    assert out is not None
    assert (out["count_in"], out["crossings"]) == (1, [])


def test_default_line_is_placed_from_the_image_size() -> None:
    counter = LineCounter()
    image = np.zeros((300, 400, 3), np.uint8)
    for i, y in enumerate(range(100, 220, 10)):
        f = Frame.from_array(image, detections=boxes([(1, 200.0, float(y))]))
        f.meta["timestamp"] = T0 + i
        out = counter.process(f, CTX)
    assert counter.lines == (Line("middle", (0.0, 150.0), (400.0, 150.0), "right"),)
    assert out is not None
    assert out["lines"] == {"middle": {"in": 1, "out": 0}}


def test_default_line_needs_a_frame_size() -> None:
    counter = LineCounter()
    with pytest.raises(ValueError, match="needs its size"):
        counter.process(Frame(meta={"timestamp": T0}), CTX)
    counter.process(Frame(meta={"timestamp": T0, "width": 640, "height": 480}), CTX)
    assert counter.lines == (Line("middle", (0.0, 240.0), (640.0, 240.0), "right"),)


def test_daily_reset_at_local_midnight_in_the_counter_timezone() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    before = datetime(2024, 3, 10, 23, 59, 58, tzinfo=berlin).timestamp()
    after = datetime(2024, 3, 11, 0, 0, 1, tzinfo=berlin).timestamp()
    local = LineCounter(lines=[DOOR], timezone="Europe/Berlin")
    utc = LineCounter(lines=[DOOR])  # 23:00 UTC: still the same UTC day
    crossing = walk(1, 300.0, [220.0, 230.0, 250.0, 260.0, 270.0])
    for counter in (local, utc):
        outs = run(counter, crossing, t0=before)  # confirmed at 23:59:58.4 local
        assert (outs[-1]["count_in"], outs[-1]["day"]) == (1, "2024-03-10")
    second = walk(2, 300.0, [220.0, 230.0, 250.0, 260.0, 270.0])
    out_local = run(local, second, t0=after)
    out_utc = run(utc, second, t0=after)
    assert [o["count_in"] for o in out_local] == [0, 0, 0, 0, 1]
    assert out_local[0]["day"] == "2024-03-11"
    assert out_local[0]["lines"] == {"door": {"in": 0, "out": 0}}
    assert out_utc[-1]["count_in"] == 2
    assert out_utc[-1]["day"] == "2024-03-10"
    assert local.end(CTX) == {
        "line_counter": {
            "day": "2024-03-11",
            "count_in": 1,
            "count_out": 0,
            "lines": {"door": {"in": 1, "out": 0}},
        }
    }


def test_a_frame_dated_before_the_current_day_does_not_reset() -> None:
    counter = LineCounter(lines=[DOOR])
    run(counter, walk(1, 300.0, range(200, 300, 10)))
    out = counter.process(Frame(meta={"timestamp": T0 - 86_400}), CTX)
    assert out is not None
    assert (out["count_in"], out["day"]) == (1, "2024-05-01")


def test_initial_resumes_the_day() -> None:
    initial = {"day": "2024-05-01", "lines": {"door": {"in": 5, "out": 2}}}
    same_day = LineCounter(lines=[DOOR], initial=initial)
    outs = run(same_day, walk(1, 300.0, range(200, 300, 10)))
    assert (outs[0]["count_in"], outs[-1]["count_in"], outs[-1]["count_out"]) == (5, 6, 2)
    next_day = LineCounter(lines=[DOOR], initial=initial)
    outs = run(next_day, walk(1, 300.0, range(200, 300, 10)), t0=T0 + 86_400)
    assert (outs[0]["count_in"], outs[-1]["count_in"], outs[-1]["count_out"]) == (0, 1, 0)
    assert outs[-1]["day"] == "2024-05-02"
    partial = LineCounter(lines=[DOOR], initial={"day": "2024-05-01", "lines": {}})
    assert partial.end(CTX) == {
        "line_counter": {
            "day": "2024-05-01",
            "count_in": 0,
            "count_out": 0,
            "lines": {"door": {"in": 0, "out": 0}},
        }
    }


def test_state_stays_bounded_as_ten_thousand_tracks_pass() -> None:
    counter = LineCounter(lines=[DOOR], max_missing=10)
    life = 8  # each track is seen for 8 frames, walking down across the line
    n = 10_000
    largest = 0
    for f in range(n + life):
        points = [
            (tid, 100.0 + tid % 400, 205.0 + 10.0 * (f - tid))
            for tid in range(max(0, f - life + 1), min(f + 1, n))
        ]
        out = counter.process(frame(points, T0 + f * DT), CTX)
        largest = max(largest, counter.tracked)
    assert out is not None
    assert out["count_in"] == n
    # At most `life` live tracks plus those unseen for up to max_missing frames.
    assert largest <= life + 10 + 1
    for f in range(12):
        counter.process(Frame(meta={"timestamp": T0 + (n + life + f) * DT}), CTX)
    assert counter.tracked == 0
    assert len(json.dumps(counter.snapshot())) < 1_000


def test_snapshot_round_trip_through_json_resumes_exactly() -> None:
    def scene() -> list[list[Point]]:
        frames: list[list[Point]] = []
        for step in range(40):
            points: list[Point] = [(1, 300.0, 200.0 + 5 * step)]  # slow: crosses at step 9
            points.append((2, 100.0, 300.0 - 7 * step))  # up: crosses at step 9
            if step % 4:  # a track seen on three frames of four
                points.append((3, 500.0, 230.0 + (step % 3) * 6))  # jitters around y=240
            frames.append(points)
        return frames

    frames = scene()
    straight = run(LineCounter(lines=[DOOR, Line("door2", (0, 250), (640, 250), "left")]), frames)

    first = LineCounter(lines=[DOOR, Line("door2", (0, 250), (640, 250), "left")])
    split = 10  # both tracks have a crossing pending here
    got = run(first, frames[:split])
    state = first.snapshot()
    assert state is not None
    assert any(p is not None for t in state["tracks"] for p in t[5])
    second = LineCounter(lines=[DOOR, Line("door2", (0, 250), (640, 250), "left")])
    second.restore(json.loads(json.dumps(state)))
    got += run(second, frames[split:], first=split)
    assert got == straight
    assert second.snapshot() == json.loads(json.dumps(second.snapshot()))


def test_restore_adopts_the_placed_default_line_and_rejects_other_lines() -> None:
    first = LineCounter()
    first.process(Frame(meta={"timestamp": T0, "width": 640, "height": 480}), CTX)
    state = json.loads(json.dumps(first.snapshot()))
    second = LineCounter()
    second.restore(state)
    assert second.lines == first.lines
    other = LineCounter(lines=[DOOR])
    with pytest.raises(ValueError, match="differ"):
        other.restore(state)
    with pytest.raises(ValueError, match="version"):
        other.restore({"tracks": []})


def test_runs_in_a_pipeline_and_reports_in_the_session_summary() -> None:
    pipeline = Pipeline([LineCounter(lines=[DOOR])])
    for i, points in enumerate(walk(1, 300.0, range(200, 300, 10))):
        f = frame(points, T0 + i)
        f.index = i
        result = pipeline.run(f, CTX)
    assert result.outputs["count_in"] == 1
    summary, errors = pipeline.end(CTX)
    assert errors == []
    assert summary["line_counter"]["count_in"] == 1


def test_line_from_dict_and_back() -> None:
    data = {"name": "door", "start": [0, 240], "end": [640, 240], "in": "right"}
    assert Line.from_dict(data) == DOOR
    assert Line.from_dict(DOOR.to_dict()) == DOOR
    assert LineCounter(lines=[data]).lines == (DOOR,)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"name": "a", "start": [0, 0], "end": [1, 1]}, r"lacks \['in'\]"),
        ({"name": "a", "start": [0, 0], "end": [1, 1], "in": "up"}, "'left' or 'right'"),
        ({"name": "a", "start": [0, 0], "end": [1, 1], "in": "left", "x": 1}, "unknown keys"),
        ({"name": "a", "start": [0], "end": [1, 1], "in": "left"}, "pair of finite numbers"),
        ({"name": "a", "start": [0, "1"], "end": [1, 1], "in": "left"}, "pair of finite"),
        ({"name": "a", "start": [2, 2], "end": [2, 2], "in": "left"}, "two distinct points"),
        ({"name": "", "start": [0, 0], "end": [1, 1], "in": "left"}, "non-empty string"),
        ([0, 0, 1, 1], "must be an object"),
    ],
)
def test_bad_lines_are_rejected_with_a_clear_message(line: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LineCounter(lines=[line])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lines": []}, "non-empty list"),
        ({"lines": [DOOR, DOOR]}, "unique"),
        ({"anchor": "top"}, "anchor must be"),
        ({"min_frames": 0}, "min_frames must be an integer >= 1"),
        ({"min_frames": 2.5}, "min_frames"),
        ({"max_missing": -1}, "max_missing must be an integer >= 0"),
        ({"timezone": "Mars/Olympus"}, "IANA name"),
        ({"classes": []}, "non-empty list of class ids"),
        ({"classes": [-1]}, "class ids >= 0"),
        ({"initial": {"day": "yesterday"}}, "YYYY-MM-DD"),
        (
            {"lines": [DOOR], "initial": {"day": "2024-05-01", "lines": {"door": {"in": -1}}}},
            "integers n >= 0",
        ),
        ({"lines": [DOOR], "initial": {"day": "2024-05-01", "lines": {"x": {}}}}, "unknown lines"),
        ({"initial": {"day": "2024-05-01", "extra": 1}}, "initial must be"),
    ],
)
def test_bad_arguments_are_rejected_with_a_clear_message(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        LineCounter(**kwargs)
