from __future__ import annotations

import base64
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import simplejpeg

from framebroker.errors import InvalidImage, PayloadTooLarge, UnsupportedMediaType
from framebroker.media import (
    EncodedImage,
    RawBGRImage,
    decode_base64_image,
    encode_jpeg,
    encode_jpeg_base64,
    open_image,
    sniff_format,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "media"


def picture(h: int = 48, w: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 4 % 256, y * 5 % 256, (x + y) % 256], axis=2).astype(np.uint8)


def png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


def test_jpeg_round_trip_and_header_size() -> None:
    img = picture()
    enc = EncodedImage(encode_jpeg(img, 95))
    assert (enc.format, enc.width, enc.height) == ("jpeg", 64, 48)
    out = enc.decode()
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - img.astype(int)).mean() < 4


@pytest.mark.parametrize("mode", ["bgr", "gray", "bgra", "16bit"])
def test_png_variants_decode_to_bgr(mode: str) -> None:
    img = picture()
    variant = {
        "bgr": img,
        "gray": cv2.cvtColor(img, cv2.COLOR_BGR2GRAY),
        "bgra": cv2.cvtColor(img, cv2.COLOR_BGR2BGRA),
        "16bit": img.astype(np.uint16) * 257,
    }[mode]
    enc = EncodedImage(png(variant))
    assert (enc.format, enc.width, enc.height) == ("png", 64, 48)
    out = enc.decode()
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    if mode != "gray":
        np.testing.assert_array_equal(out, img)


def test_real_photo() -> None:
    if not DATA.is_dir():
        pytest.skip(f"shared test data not found at {DATA}")
    enc = open_image((DATA / "astronaut.png").read_bytes(), max_pixels=10**6)
    assert enc.decode().shape == (512, 512, 3)


def test_size_limit_is_checked_from_the_header_alone() -> None:
    # A header claiming 20000x20000 with no pixel data at all: refused before any decoding.
    with pytest.raises(PayloadTooLarge, match="20000x20000 = 400000000 pixels"):
        open_image(png_header_only(20000, 20000), max_pixels=10**7)


def test_zero_dimensions() -> None:
    with pytest.raises(InvalidImage, match="no pixels"):
        open_image(png_header_only(0, 10), max_pixels=100)


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_truncated_files_are_errors_not_grey_pictures(fmt: str) -> None:
    data = encode_jpeg(picture(), 90) if fmt == "jpeg" else png(picture())
    enc = EncodedImage(data[: len(data) * 2 // 3])
    with pytest.raises(InvalidImage, match="truncated|cannot be decoded"):
        enc.decode()


def test_unknown_bytes() -> None:
    with pytest.raises(UnsupportedMediaType, match="JPEG or PNG"):
        sniff_format(b"GIF89a....")
    with pytest.raises(UnsupportedMediaType):
        EncodedImage(b"")


def test_broken_headers() -> None:
    with pytest.raises(InvalidImage):
        EncodedImage(b"\xff\xd8\xff\xe0" + b"\x00" * 8)
    with pytest.raises(InvalidImage, match="IHDR"):
        EncodedImage(b"\x89PNG\r\n\x1a\n" + b"\x00" * 4)


def test_base64_plain_data_url_and_line_breaks() -> None:
    raw = png(picture())
    b64 = base64.b64encode(raw).decode()
    for text in (b64, "data:image/png;base64," + b64, base64.encodebytes(raw).decode()):
        img = decode_base64_image(text, max_bytes=10**6, max_pixels=10**6)
        assert (img.width, img.height) == (64, 48)


def test_bad_base64() -> None:
    with pytest.raises(InvalidImage, match="not valid base64"):
        decode_base64_image("@@@@", max_bytes=100, max_pixels=100)
    with pytest.raises(InvalidImage, match="data URL"):
        decode_base64_image("data:image/png,abc", max_bytes=100, max_pixels=100)
    with pytest.raises(InvalidImage, match="empty"):
        decode_base64_image("", max_bytes=100, max_pixels=100)


def test_base64_over_the_byte_limit() -> None:
    b64 = base64.b64encode(png(picture())).decode()
    with pytest.raises(PayloadTooLarge, match="limit of 100 bytes"):
        decode_base64_image(b64, max_bytes=100, max_pixels=10**6)


def test_raw_bgr_is_a_view_and_checks_its_size() -> None:
    buf = bytearray(picture().tobytes())
    raw = RawBGRImage(buf, 64, 48)
    arr = raw.decode()
    assert arr.shape == (48, 64, 3)
    assert np.shares_memory(arr, np.frombuffer(buf, np.uint8))
    with pytest.raises(InvalidImage) as err:
        RawBGRImage(buf, 1920, 1080)
    assert "6220800" in err.value.message and str(len(buf)) in err.value.message
    with pytest.raises(InvalidImage, match="positive"):
        RawBGRImage(b"", 0, 10)


def test_encode_non_contiguous() -> None:
    img = picture()[:, ::2]
    data = base64.b64decode(encode_jpeg_base64(img))
    assert simplejpeg.decode_jpeg_header(data)[:2] == (48, 32)
