"""ByteTrack as a pipeline stage inside a session, including pause and resume."""

from __future__ import annotations

import json

import numpy as np

from framebroker.core import Detections, Frame, Pipeline, Session
from framebroker.processors.bytetrack.processor import ByteTrackProcessor


def crowd(step: int, n: int = 12) -> Detections:
    """n boxes moving steadily, a few of them entering and leaving over time."""
    rows = []
    for i in range(n):
        if (step + 7 * i) % 40 < 5:  # each one disappears for a while now and then
            continue
        x = 20 + 45 * i + 2.0 * step * (1 if i % 2 else -1)
        rows.append([x, 100 + 10 * (i % 3), 30, 80, 0.9 if i % 3 else 0.4, i % 2])
    return Detections.from_rows(rows)


def session(sid: str = "s") -> Session:
    return Session(sid, Pipeline([ByteTrackProcessor()]))


def ids(s: Session, step: int) -> list[tuple[int, int]]:
    out = s.process(Frame(detections=crowd(step))).frame.detections
    assert out is not None
    return list(zip(out.index.tolist(), out.track_id.tolist(), strict=True))


def test_detections_get_track_ids_and_keep_their_rows() -> None:
    s = session()
    first = s.process(Frame(detections=crowd(0))).frame.detections
    assert first is not None
    assert (first.track_id >= 1).all()
    assert len(set(first.track_id.tolist())) == len(first)
    src = crowd(0)
    np.testing.assert_array_equal(first.xyxy, src.xyxy[first.index])


def test_a_resumed_session_gives_the_same_ids_as_an_uninterrupted_one() -> None:
    straight = session()
    expected = [ids(straight, step) for step in range(120)]

    before = session()
    got = [ids(before, step) for step in range(60)]
    saved = json.loads(json.dumps(before.snapshot()))
    after = session()
    after.restore(saved)
    got += [ids(after, step) for step in range(60, 120)]
    assert got == expected


def test_end_reports_frames_and_tracks() -> None:
    s = session()
    for step in range(10):
        s.process(Frame(detections=crowd(step)))
    results = s.end().results["tracker"]
    assert results["frames"] == 10
    assert results["tracks_started"] >= 8


def test_a_frame_without_detections_is_fine() -> None:
    s = session()
    out = s.process(Frame()).frame.detections
    assert out is not None
    assert len(out) == 0
