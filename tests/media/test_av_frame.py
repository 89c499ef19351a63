from __future__ import annotations

import threading

import av
import numpy as np
import pytest

from framebroker.core import Frame, ImageSource
from framebroker.media.av_frame import VideoFrameImage


def test_converts_to_bgr_once_on_first_use_and_shares_a_read_only_array() -> None:
    bgr = np.zeros((6, 10, 3), np.uint8)
    bgr[..., 2] = 200  # red
    source = VideoFrameImage(av.VideoFrame.from_ndarray(bgr, format="bgr24"))
    assert isinstance(source, ImageSource)
    assert (source.width, source.height) == (10, 6)
    assert not source.decoded
    results: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda: results.append(source.decode())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert source.decoded
    assert len({id(a) for a in results}) == 1
    image = Frame(source=source).image
    assert image.shape == (6, 10, 3)
    assert image.dtype == np.uint8
    np.testing.assert_array_equal(image, bgr)
    with pytest.raises(ValueError, match="read-only"):
        image[0, 0, 0] = 1


def test_yuv_frames_as_a_decoder_gives_them() -> None:
    bgr = np.full((16, 16, 3), 128, np.uint8)
    yuv = av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(format="yuv420p")
    image = VideoFrameImage(yuv).decode()
    assert image.shape == (16, 16, 3)
    assert abs(float(image.mean()) - 128) < 6  # limited-range YUV rounds
