from __future__ import annotations

import numpy as np
import pytest

from framebroker.media.video_windows import WindowWriter

from ..media.test_encode import decoded
from ..transports.images import scene


def test_windows_close_every_n_frames_and_number_themselves() -> None:
    w = WindowWriter(3, max_bytes=64 << 20)
    out = [w.add(scene(64, 48, seed=i), float(i)) for i in range(7)]
    assert [index for index, _ in out] == [0, 0, 0, 1, 1, 1, 2]
    closed = [c for _, cs in out for c in cs]
    assert [(c.index, c.count, c.first_frame, c.closed_by) for c in closed] == [
        (0, 3, 0, "frames"),
        (1, 3, 3, "frames"),
    ]
    frames, _, _ = decoded(closed[1].video)
    assert len(frames) == 3
    assert closed[0].frames == []  # not kept unless asked
    assert w.open_index == 2
    assert w.open_frames == 1
    assert w.open_since == 6.0
    last = w.close("end", 9.0)
    assert last is not None
    assert (last.count, last.closed_by, last.closed_at) == (1, "end", 9.0)
    assert w.close("end", 10.0) is None


def test_a_new_size_closes_the_window_and_opens_the_next() -> None:
    w = WindowWriter(10, max_bytes=64 << 20, keep_frames=True)
    w.add(scene(64, 48), 0.0)
    w.add(scene(64, 48), 1.0)
    index, closed = w.add(scene(80, 60), 2.0)
    assert index == 1
    assert [(c.count, c.size, c.closed_by) for c in closed] == [(2, (64, 48), "size")]
    assert len(closed[0].frames) == 2
    done = w.close("seconds", 3.0)
    assert done is not None
    assert done.size == (80, 60)
    assert decoded(done.video)[0][0].shape == (60, 80, 3)


def test_kept_frames_are_bounded_by_bytes() -> None:
    frame = scene(64, 48)
    w = WindowWriter(100, max_bytes=frame.nbytes * 2 + 4096, keep_frames=True)
    closed = [c for i in range(5) for c in w.add(scene(64, 48, seed=i), float(i))[1]]
    assert [c.count for c in closed] == [2, 2]
    assert all(c.closed_by == "bytes" for c in closed)
    assert w.open_bytes >= frame.nbytes


def test_a_window_of_one_frame_and_abandon() -> None:
    w = WindowWriter(1, max_bytes=1 << 20)
    _, closed = w.add(scene(64, 48), 0.0)
    assert [c.count for c in closed] == [1]
    w2 = WindowWriter(5, max_bytes=1 << 20)
    w2.add(scene(64, 48), 0.0)
    w2.abandon()
    assert w2.open_index is None
    w2.abandon()


def test_bad_frames_and_settings_are_refused() -> None:
    w = WindowWriter(2, max_bytes=1 << 20)
    with pytest.raises(ValueError, match="BGR"):
        w.add(np.zeros((4, 4), np.uint8), 0.0)
    with pytest.raises(ValueError, match="window_frames"):
        WindowWriter(0, max_bytes=1)
    with pytest.raises(ValueError, match="max_bytes"):
        WindowWriter(1, max_bytes=0)
