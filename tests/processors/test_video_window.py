"""VideoWindow's snapshot: the numbering, carried into a fresh processor (a resumed stream)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from framebroker.core import Frame, ProcessContext
from framebroker.core.frame import RawImage
from framebroker.processors.video_window import CLOSE, VideoWindow

from ..transports.images import scene

CTX = ProcessContext("test")


def frame(seed: int = 0) -> Frame:
    return Frame(source=RawImage(scene(64, 48, seed=seed)))


def closed_indices(out: dict[str, Any]) -> list[int]:
    return [w.index for w in out["closed"]]


def test_the_snapshot_is_the_numbering_and_is_small() -> None:
    proc = VideoWindow(window_frames=3)
    assert proc.snapshot() == {"frames": 0, "windows": 0}
    for i in range(7):  # windows 0 and 1 closed, window 2 open with one frame
        proc.process(frame(i), CTX)
    state = proc.snapshot()
    assert state == {"frames": 7, "windows": 3}  # the open window's index counts as used
    assert len(json.dumps(state)) < 100  # no frames, no video: cheap to store every second
    proc.end(CTX)


def test_a_restored_window_numbers_on_and_never_reuses_the_open_windows_index() -> None:
    first = VideoWindow(window_frames=3)
    for i in range(4):  # window 0 closed, window 1 open (frame 3) at the snapshot
        first.process(frame(i), CTX)
    state = json.loads(json.dumps(first.snapshot()))
    first.end(CTX)

    second = VideoWindow(window_frames=3)
    second.restore(state)
    outs = [second.process(frame(10 + i), CTX) for i in range(3)]
    # Window 1's frame went with its node; the next frame opens window 2, numbered 4.
    assert [(o["frame"], o["window"]) for o in outs] == [(4, 2), (5, 2), (6, 2)]
    done = outs[-1]["closed"]
    assert [(w.index, w.first_frame, w.count) for w in done] == [(2, 4, 3)]
    closing = second.process(Frame(meta={CLOSE: "end"}), CTX)
    assert closed_indices(closing) == []  # nothing open
    assert second.end(CTX) == {"frames": 7, "windows": 3}


def test_restore_refuses_a_bad_state_or_a_used_writer() -> None:
    proc = VideoWindow(window_frames=3)
    for bad in ({}, {"frames": 1}, {"frames": -1, "windows": 0}, {"frames": 1, "windows": "2"}):
        with pytest.raises(ValueError, match=r"frames|windows"):
            proc.restore(bad)
    proc.process(frame(), CTX)
    with pytest.raises(ValueError, match="before its first frame"):
        proc.restore({"frames": 5, "windows": 2})
    proc.end(CTX)
