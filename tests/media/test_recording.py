from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from framebroker.media.recording import StreamRecorder


def rtp_frame(i: int, width: int = 64, height: int = 48) -> av.VideoFrame:
    bgr = np.full((height, width, 3), (i * 8) % 256, np.uint8)
    frame = av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(format="yuv420p")
    frame.pts = 123_456 + i * 3000  # 30 fps on the 90 kHz clock, from an arbitrary origin
    frame.time_base = Fraction(1, 90_000)
    return frame


def test_records_frames_at_their_own_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "rec" / "s1.mp4"
    rec = StreamRecorder(path)
    assert not rec.started
    for i in range(30):
        rec.write(rtp_frame(i))
    rec.write(rtp_frame(29))  # a repeated timestamp is skipped
    rec.write(rtp_frame(30, 32, 24))  # the sender shrank its picture: scaled back up
    rec.close()
    rec.close()
    assert (rec.frames, rec.skipped) == (31, 1)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
    assert len(frames) == 31
    assert {(f.width, f.height) for f in frames} == {(64, 48)}
    assert float(frames[0].time) == pytest.approx(0.0, abs=1e-3)
    assert float(frames[-1].time) == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(RuntimeError, match="closed"):
        rec.write(rtp_frame(40))


def test_odd_sizes_are_trimmed_to_even(tmp_path: Path) -> None:
    rec = StreamRecorder(tmp_path / "odd.mp4")
    rec.write(rtp_frame(0, 65, 49))
    rec.close()
    with av.open(str(tmp_path / "odd.mp4")) as container:
        frame = next(container.decode(video=0))
    assert (frame.width, frame.height) == (64, 48)


def test_a_recorder_closed_before_any_frame_leaves_no_file(tmp_path: Path) -> None:
    rec = StreamRecorder(tmp_path / "none.mp4")
    rec.close()
    assert not (tmp_path / "none.mp4").exists()
    with pytest.raises(ValueError, match="crf"):
        StreamRecorder(tmp_path / "x.mp4", crf=99)
