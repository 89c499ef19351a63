from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from framebroker.processors.bytetrack import ByteTrack, ByteTrackConfig
from framebroker.processors.bytetrack.kernel import linear_assignment


def person(x: float, y: float = 100, w: float = 40, h: float = 100) -> list[float]:
    return [x, y, x + w, y + h]


def test_seed_example_gets_ids_1_and_2() -> None:
    out = ByteTrack().update([[20, 23, 32, 47], [12, 34, 57, 90]], [0.89, 0.78])
    assert out.track_id.tolist() == [1, 2]
    assert out.det_index.tolist() == [0, 1]
    np.testing.assert_allclose(out.xyxy, [[20, 23, 32, 47], [12, 34, 57, 90]])


def test_constant_velocity_is_followed_and_predicted() -> None:
    t = ByteTrack()
    for k in range(30):
        out = t.update([person(100 + 8 * k)], [0.9])
        assert out.track_id.tolist() == [1]
    # The filtered box has converged on the motion.
    assert abs(out.xyxy[0, 0] - (100 + 8 * 29)) < 1.0
    # A frame with no detection: the track is lost, not reported...
    assert len(t.update(np.zeros((0, 4)), np.zeros(0))) == 0
    # ...and the next detection, further along the same line, takes the same id.
    out = t.update([person(100 + 8 * 31)], [0.9])
    assert out.track_id.tolist() == [1]


def test_lost_tracks_expire_after_the_buffer() -> None:
    t = ByteTrack(track_buffer=5, frame_rate=30)
    for _ in range(5):
        t.update([person(100)], [0.9])
    for _ in range(4):
        t.update(np.zeros((0, 4)), np.zeros(0))
    assert t.update([person(100)], [0.9]).track_id.tolist() == [1]  # back within the buffer
    for _ in range(8):
        t.update(np.zeros((0, 4)), np.zeros(0))
    t.update([person(100)], [0.9])
    assert t.update([person(100)], [0.9]).track_id.tolist() == [2]  # a new track


def test_low_scores_extend_tracks_but_never_start_them() -> None:
    t = ByteTrack()
    t.update([person(100)], [0.9])
    out = t.update([person(102), person(400)], [0.3, 0.3])
    assert out.track_id.tolist() == [1]
    assert out.det_index.tolist() == [0]
    for _ in range(5):
        out = t.update([person(400)], [0.3])
    assert 2 not in out.track_id.tolist()


def test_new_tracks_need_a_second_sighting_after_frame_one() -> None:
    t = ByteTrack()
    t.update([person(100)], [0.9])
    assert t.update([person(100), person(300)], [0.9, 0.9]).track_id.tolist() == [1]
    assert t.update([person(100), person(300)], [0.9, 0.9]).track_id.tolist() == [1, 2]


def crowd(step: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(step)
    rows = []
    for i in range(15):
        if (step // 10 + i) % 6 == 0:
            continue
        x = 30 * i + 3 * step * (1 if i % 2 else -1) % 500
        rows.append(person(x + rng.normal(0, 1), 50 + 40 * (i % 4)))
    scores = rng.uniform(0.2, 1.0, len(rows))
    return np.array(rows), scores


def test_state_round_trips_through_json_and_resumes_identically() -> None:
    straight = ByteTrack()
    expected = [straight.update(*crowd(k)) for k in range(200)]
    first = ByteTrack()
    for k in range(90):
        first.update(*crowd(k))
    resumed = ByteTrack.from_state(json.loads(json.dumps(first.get_state())))
    for k in range(90, 200):
        got = resumed.update(*crowd(k))
        assert got.track_id.tolist() == expected[k].track_id.tolist()
        np.testing.assert_array_equal(got.xyxy, expected[k].xyxy)


def test_bad_state_is_refused() -> None:
    with pytest.raises(ValueError, match="version"):
        ByteTrack().set_state({"version": 99})
    state = ByteTrack().get_state()
    state["floats"] = [[1.0, 2.0]]
    state["ints"] = [[1]]
    with pytest.raises(ValueError, match="malformed"):
        ByteTrack().set_state(state)


def test_reset_restarts_ids() -> None:
    t = ByteTrack()
    t.update([person(100)], [0.9])
    t.reset()
    assert t.frame_id == 0
    assert t.update([person(500)], [0.9]).track_id.tolist() == [1]


def test_memory_stays_bounded_with_fresh_ids_all_the_time() -> None:
    t = ByteTrack(track_buffer=10)
    rng = np.random.default_rng(1)
    for k in range(3000):
        # Every 3 frames a brand-new crowd appears somewhere else.
        base = rng.uniform(0, 2000, size=(10, 1))
        boxes = np.hstack([base, base, base + 30, base + 80]) if k % 3 == 0 else np.zeros((0, 4))
        t.update(boxes, np.full(len(boxes), 0.9))
    assert t.track_count < 60
    assert t.get_state()["next_id"] > 500


def test_input_checks_and_config_validation() -> None:
    with pytest.raises(ValueError, match="2 boxes but 1 scores"):
        ByteTrack().update(np.zeros((2, 4)), np.zeros(1))
    with pytest.raises(ValueError, match="track_thresh must be a number in"):
        ByteTrackConfig(track_thresh=1.5)
    with pytest.raises(ValueError, match="track_buffer must be an integer >= 1"):
        ByteTrackConfig(track_buffer=0)
    with pytest.raises(ValueError, match="frame_rate must be a number > 0"):
        ByteTrackConfig(frame_rate=float("nan"))
    with pytest.raises(TypeError):
        ByteTrack(bogus=1)
    assert ByteTrackConfig().det_thresh == pytest.approx(0.6)
    assert ByteTrackConfig(frame_rate=14, track_buffer=30).max_time_lost == 14


@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (4, 7), (7, 4), (12, 12), (20, 9)])
def test_assignment_matches_scipy(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    for _ in range(20):
        cost = rng.uniform(-1, 0, shape)
        cost[rng.uniform(size=shape) < 0.4] = 0.0  # ties, as in clipped gains
        rows, cols = linear_assignment(cost)
        ref_rows, ref_cols = linear_sum_assignment(cost)
        assert cost[rows, cols].sum() == pytest.approx(cost[ref_rows, ref_cols].sum())
        assert rows.tolist() == ref_rows.tolist()
        assert cols.tolist() == ref_cols.tolist()


class SupervisionLike:
    """The part of supervision.Detections the adapter relies on (supervision is optional)."""

    def __init__(self, xyxy: np.ndarray, confidence: np.ndarray | None) -> None:
        self.xyxy = xyxy
        self.confidence = confidence
        self.tracker_id: np.ndarray | None = None

    def __getitem__(self, index: np.ndarray) -> SupervisionLike:
        conf = None if self.confidence is None else self.confidence[index]
        return SupervisionLike(self.xyxy[index], conf)


def test_track_accepts_framebroker_and_supervision_detections() -> None:
    from framebroker.core import Detections

    ours = ByteTrack().track(
        Detections.from_arrays([person(10), person(300)], [0.9, 0.95], class_id=[3, 4])
    )
    assert ours.track_id.tolist() == [1, 2]
    assert ours.class_id.tolist() == [3, 4]
    theirs = ByteTrack().track(SupervisionLike(np.array([person(10), person(300)]), None))
    assert theirs.tracker_id.tolist() == [1, 2]
    np.testing.assert_array_equal(theirs.xyxy, [person(10), person(300)])
    with pytest.raises(TypeError, match="expected framebroker or supervision Detections"):
        ByteTrack().track([1, 2, 3])
