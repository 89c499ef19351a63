"""Opening a video (``media/container.py``): what it reports, and each way a source is refused
at once."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from framebroker.media.container import open_source
from framebroker.media.reader import VideoSource
from framebroker.media.sources import SourceError

from .video_clips import H, W


def test_open_source_reports_the_stream(clip: Path) -> None:
    with open_source(str(clip)) as opened:
        assert (opened.width, opened.height) == (W, H)
        assert opened.fps == 25
        assert opened.duration_s == pytest.approx(2.0)
        assert opened.frame_count == 50
        assert not opened.live
        assert opened.stream.thread_type == av.codec.context.ThreadType.AUTO
        assert sum(1 for _ in opened.frames()) == 50


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.mp4"
    with pytest.raises(SourceError, match=r"nope\.mp4.*no such file"):
        open_source(str(path))
    with pytest.raises(SourceError, match="no such file"):
        VideoSource(str(path), lambda *_: None).start()


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="is a directory"):
        open_source(str(tmp_path))


def test_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("not a video at all\n" * 20)
    with pytest.raises(SourceError, match="not a video file FFmpeg can read"):
        open_source(str(path))


def test_truncated_file(tmp_path: Path, clip: Path) -> None:
    path = tmp_path / "cut.mp4"
    path.write_bytes(clip.read_bytes()[:600])
    with pytest.raises(SourceError, match=r"cut\.mp4"):
        open_source(str(path))


def test_audio_only(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000, layout="mono")
        samples = (np.sin(np.arange(8000) / 5) * 1000).astype(np.int16)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate, frame.pts = 8000, 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with pytest.raises(SourceError, match=r"no video stream \(streams found: audio\)"):
        open_source(str(path))


def test_undecodable_video(tmp_path: Path) -> None:
    path = tmp_path / "garbage.mkv"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.open()
        rng = np.random.default_rng(0)
        for i in range(10):
            packet = av.Packet(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
            packet.stream, packet.pts, packet.dts = stream, i, i
            packet.time_base = Fraction(1, 25)
            out.mux(packet)
    with pytest.raises(SourceError, match=r"garbage\.mkv.*(no decodable frame|cannot decode)"):
        open_source(str(path))
