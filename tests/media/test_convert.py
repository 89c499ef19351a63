"""Conversion of decoded frames on a per-thread swscale context."""

from __future__ import annotations

import threading
from pathlib import Path

import av
import numpy as np
import pytest
from av.video.frame import VideoFrame

from framebroker.media import convert
from framebroker.media.convert import reformat, to_bgr

LAST_PID = Path("/proc/sys/kernel/ns_last_pid")


def yuv_frame(width: int = 320, height: int = 240, seed: int = 0) -> VideoFrame:
    rng = np.random.default_rng(seed)
    bgr = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    bgr[: height // 2] = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None]  # smooth part
    return av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(format="yuv420p")


@pytest.mark.parametrize("size", [None, (160, 120), (100, 75)])
def test_to_bgr_gives_the_same_pixels_as_pyav(size: tuple[int, int] | None) -> None:
    frame = yuv_frame()
    if size is None:
        expected = frame.to_ndarray(format="bgr24")
        got = to_bgr(frame)
    else:
        expected = frame.to_ndarray(
            format="bgr24", width=size[0], height=size[1], interpolation="AREA"
        )
        got = to_bgr(frame, *size)
    assert got.dtype == np.uint8
    assert got.flags.c_contiguous
    assert np.array_equal(got, expected)


def test_one_thread_converts_frames_of_different_sizes_in_turn() -> None:
    small, large = yuv_frame(64, 48, 1), yuv_frame(320, 240, 2)
    for _ in range(3):
        assert np.array_equal(to_bgr(small), small.to_ndarray(format="bgr24"))
        assert np.array_equal(to_bgr(large), large.to_ndarray(format="bgr24"))


def test_reformat_returns_the_frame_when_nothing_changes() -> None:
    frame = yuv_frame()
    assert reformat(frame, format="yuv420p") is frame
    out = reformat(frame, width=160, height=120, format="yuv420p")
    assert (out.width, out.height, out.format.name) == (160, 120, "yuv420p")


def test_each_thread_keeps_its_own_context() -> None:
    seen: dict[str, object] = {}

    def remember(name: str) -> None:
        to_bgr(yuv_frame())
        seen[name] = convert._reformatter()
        assert convert._reformatter() is seen[name]  # kept between calls on one thread

    threads = [threading.Thread(target=remember, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen["a"] is not seen["b"]


def test_threads_convert_at_once_without_mixing_pictures() -> None:
    frames = [yuv_frame(seed=k) for k in range(4)]
    expected = [f.to_ndarray(format="bgr24") for f in frames]
    wrong: list[int] = []

    def convert_all(k: int) -> None:
        for _ in range(25):
            if not np.array_equal(to_bgr(frames[k]), expected[k]):
                wrong.append(k)

    threads = [threading.Thread(target=convert_all, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


def pids_used_by(work: object) -> int:
    """Process and thread ids the kernel handed out while ``work()`` ran (anyone's)."""
    before = int(LAST_PID.read_text())
    work()  # type: ignore[operator]
    return int(LAST_PID.read_text()) - before


def test_converting_frames_starts_no_threads() -> None:
    # FFmpeg 8's swscale starts a thread per core for every new context, and PyAV's own
    # frame.to_ndarray(format=...) makes a context for each frame object it converts (2 ids
    # per frame on this machine). Ours makes one per thread.
    to_bgr(yuv_frame())  # this thread's context, made once
    frames = [yuv_frame(seed=k) for k in range(30)]

    def convert_all() -> None:
        for frame in frames:
            to_bgr(frame)
            reformat(frame, width=160, height=120, format="yuv420p")

    # Other processes may start threads meanwhile: the quietest of three tries counts.
    assert min(pids_used_by(convert_all) for _ in range(3)) <= 5
