from __future__ import annotations

import base64

import numpy as np
import pytest
import simplejpeg

from framebroker.core import Detections, Frame, ProcessContext
from framebroker.processors.annotate import Annotator

CTX = ProcessContext(session_id="s")


def test_returns_a_jpeg_of_the_same_size() -> None:
    img = np.full((120, 160, 3), 90, np.uint8)
    frame = Frame.from_array(img, detections=Detections.from_arrays([[10, 10, 60, 80]], [0.9]))
    out = Annotator(quality=80).process(frame, CTX)
    assert out is not None
    decoded = simplejpeg.decode_jpeg(base64.b64decode(out["annotated_image"]), colorspace="BGR")
    assert decoded.shape == img.shape
    assert np.abs(decoded.astype(int) - 90).max() > 50  # the box is there


def test_nothing_to_draw_on() -> None:
    assert Annotator().process(Frame(), CTX) is None


def test_quality_checked() -> None:
    with pytest.raises(ValueError, match="quality"):
        Annotator(quality=0)
