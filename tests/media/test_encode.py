from __future__ import annotations

import io

import av
import numpy as np
import pytest

from framebroker.media.encode import EncoderOptions, Mp4Encoder, encode_mp4, even_size

from ..transports.images import scene


def decoded(mp4: bytes) -> tuple[list[np.ndarray], str, float]:
    with av.open(io.BytesIO(mp4)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(stream)]
        rate = stream.average_rate
        return frames, stream.codec_context.name, float(rate) if rate else 0.0


def test_a_window_decodes_back_to_its_frames() -> None:
    frames = [scene(640, 480, seed=3 * i) for i in range(30)]
    mp4 = encode_mp4(frames)
    back, codec, fps = decoded(mp4)
    assert codec == "h264"
    assert len(back) == 30
    assert back[0].shape == (480, 640, 3)
    assert fps == pytest.approx(30.0)
    # Lossy, but close: mean absolute error of a few levels on a smooth picture.
    assert float(np.abs(back[7].astype(int) - frames[7].astype(int)).mean()) < 6


def test_incremental_encoder_counts_and_reports_bytes() -> None:
    enc = Mp4Encoder(320, 240, EncoderOptions(fps=15))
    for i in range(5):
        enc.add(scene(320, 240, seed=i))
    assert enc.frames == 5
    mp4 = enc.finish()
    assert enc.closed
    back, _, fps = decoded(mp4)
    assert len(back) == 5
    assert fps == pytest.approx(15.0)
    with pytest.raises(RuntimeError, match="finished"):
        enc.add(scene(320, 240))


def test_odd_sides_are_padded_to_even() -> None:
    assert even_size(641, 479) == (642, 480)
    assert even_size(2, 2) == (2, 2)
    enc = Mp4Encoder(641, 479)
    assert (enc.width, enc.height) == (642, 480)
    enc.add(scene(641, 479))
    back, _, _ = decoded(enc.finish())
    assert back[0].shape == (480, 642, 3)


def test_a_one_pixel_frame_is_encoded() -> None:
    back, _, _ = decoded(encode_mp4([np.full((1, 1, 3), 200, np.uint8)]))
    assert back[0].shape == (2, 2, 3)


def test_wrong_frames_are_refused_with_the_expected_shape() -> None:
    enc = Mp4Encoder(64, 48)
    with pytest.raises(ValueError, match=r"shape \(48, 64, 3\), got uint8 \(40, 64, 3\)"):
        enc.add(np.zeros((40, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="float32"):
        enc.add(np.zeros((48, 64, 3), np.float32))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="zero frames"):
        enc.finish()
    enc.close()
    with pytest.raises(ValueError, match="zero frames"):
        encode_mp4([])
    with pytest.raises(ValueError, match=r"shape \(48, 64, 3\), got uint8 \(48, 66, 3\)"):
        encode_mp4([np.zeros((48, 64, 3), np.uint8), np.zeros((48, 66, 3), np.uint8)])


def test_abandoned_encoder_closes_quietly() -> None:
    enc = Mp4Encoder(64, 48)
    enc.add(np.zeros((48, 64, 3), np.uint8))
    enc.close()
    enc.close()
    assert enc.closed


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fps": 0}, "fps"),
        ({"preset": "warp"}, "preset"),
        ({"crf": 60}, "crf"),
        ({"threads": -1}, "threads"),
    ],
)
def test_options_are_checked(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EncoderOptions(**kwargs)  # type: ignore[arg-type]
