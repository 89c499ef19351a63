"""The clips the video tests read, made once per test module."""

from __future__ import annotations

from pathlib import Path

import pytest

from .video_clips import encode_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s at 25 fps, H.264 with B-frames in MP4: 50 frames."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    encode_video(str(path), frames=50, fps=25, codec="libx264")
    return path


@pytest.fixture(scope="module")
def slow_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 frames at 1 fps, MPEG-4 part 2 in MP4: long gaps to stop in."""
    path = tmp_path_factory.mktemp("video") / "slow.mp4"
    encode_video(str(path), frames=5, fps=1)
    return path
