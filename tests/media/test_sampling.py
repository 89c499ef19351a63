"""Frame sampling (``media/sampling.py``): every frame, a rate on the video's clock, seeking,
resizing, realtime pacing, and what it refuses."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from framebroker.media.sampling import read_frames
from framebroker.media.sources import SourceError

from .video_clips import VTEST, index_of, needs_vtest


def test_read_frames_every_frame(clip: Path) -> None:
    frames = list(read_frames(str(clip)))
    assert [i for _, _, i in frames] == list(range(50))
    assert [p for _, p, _ in frames] == pytest.approx([i / 25 for i in range(50)])
    assert [index_of(img) for img, _, _ in frames] == list(range(50))


def test_read_frames_samples_at_a_decimal_rate(clip: Path) -> None:
    frames = list(read_frames(str(clip), fps=2.5))
    assert [p for _, p, _ in frames] == pytest.approx([0.0, 0.4, 0.8, 1.2, 1.6])
    assert [i for _, _, i in frames] == [0, 10, 20, 30, 40]
    assert [index_of(img) for img, _, _ in frames] == [0, 10, 20, 30, 40]


def test_read_frames_takes_the_frame_on_screen(clip: Path) -> None:
    # 3 fps on a 25 fps clip: instants 0, 1/3, 2/3, ... fall between frames.
    frames = list(read_frames(str(clip), fps=3))
    assert [i for _, _, i in frames] == [0, 8, 16, 25, 33, 41]


def test_read_frames_never_repeats_a_frame(slow_clip: Path) -> None:
    frames = list(read_frames(str(slow_clip), fps=4))
    assert [i for _, _, i in frames] == [0, 1, 2, 3, 4]


def test_read_frames_seeks(clip: Path) -> None:
    frames = list(read_frames(str(clip), fps=2.5, seek_s=1.0))
    assert [p for _, p, _ in frames] == pytest.approx([1.0, 1.4, 1.8])
    assert [i for _, _, i in frames] == [25, 35, 45]
    assert [index_of(img) for img, _, _ in frames] == [25, 35, 45]
    rest = list(read_frames(str(clip), seek_s=1.5))
    assert [i for _, _, i in rest] == list(range(37, 50))  # frame 37 is on screen at 1.5 s


def test_read_frames_resizes(clip: Path) -> None:
    frames = list(read_frames(str(clip), fps=5, size=(20, 30)))
    assert len(frames) == 10
    assert {img.shape for img, _, _ in frames} == {(30, 20, 3)}


def test_read_frames_realtime_paces(clip: Path) -> None:
    t0 = time.monotonic()
    frames = list(read_frames(str(clip), fps=5, seek_s=1.0, realtime=True))
    assert len(frames) == 5
    assert 0.75 <= time.monotonic() - t0 <= 1.3  # 4 intervals of 0.2 s


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"fps": 0}, ValueError, "fps"),
        ({"fps": float("nan")}, ValueError, "fps"),
        ({"seek_s": -1}, ValueError, "seek_s"),
        ({"size": (0, 5)}, ValueError, "size"),
        ({"seek_s": 2.0}, SourceError, r"cannot start at 2 s, the video is 2 s long"),
    ],
)
def test_read_frames_refuses(
    clip: Path, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        read_frames(str(clip), **kwargs)


@needs_vtest
def test_vtest_seek_and_sample() -> None:
    frames = list(read_frames(str(VTEST), fps=2.5, seek_s=70))
    assert len(frames) == 24
    assert [i for _, _, i in frames[:3]] == [700, 704, 708]
    assert frames[-1][1] == pytest.approx(79.2)
    assert frames[0][0].shape == (576, 768, 3)
