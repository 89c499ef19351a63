from __future__ import annotations

import base64
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import simplejpeg

from framebroker.core import ImageSource
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
from framebroker.media.image import Subsampling

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
ASTRONAUT = DATA / "media" / "astronaut.png"


def picture(h: int = 48, w: int = 64) -> np.ndarray:
    """A smooth gradient: JPEG keeps it close, so round trips can be compared pixel by pixel."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 4 % 256, y * 5 % 256, (x + y) % 256], axis=2).astype(np.uint8)


def png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def jpeg(img: np.ndarray, quality: int = 95) -> bytes:
    return bytes(simplejpeg.encode_jpeg(img, quality=quality, colorspace="BGR"))


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)


def with_exif_orientation(png_bytes: bytes, orientation: int) -> bytes:
    """The PNG with an eXIf chunk asking viewers to rotate it."""
    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff = b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0)
    return png_bytes[:33] + png_chunk(b"eXIf", tiff) + png_bytes[33:]


def assert_close(a: np.ndarray, b: np.ndarray, mean: float) -> None:
    assert a.shape == b.shape
    assert np.abs(a.astype(int) - b.astype(int)).mean() < mean


# --- sniffing ----------------------------------------------------------------------------


def test_sniff_by_magic_bytes() -> None:
    assert sniff_format(jpeg(picture())) == "jpeg"
    assert sniff_format(memoryview(png(picture()))) == "png"


@pytest.mark.parametrize("data", [b"GIF89a\x01\x00\x01\x00", b"\x00" * 16, b"iVBORw0KGgo="])
def test_other_bytes_are_unsupported(data: bytes) -> None:
    with pytest.raises(UnsupportedMediaType, match="expected a JPEG or PNG image") as err:
        sniff_format(data)
    assert data[:4].hex() in err.value.message.replace(" ", "")
    assert err.value.field == "image"


def test_random_bytes_and_nothing_are_unsupported() -> None:
    noise = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    with pytest.raises(UnsupportedMediaType):
        open_image(noise, max_pixels=10**6)
    with pytest.raises(UnsupportedMediaType, match="got no bytes"):
        EncodedImage(b"", field="frame")


# --- decoding ----------------------------------------------------------------------------


def test_encoded_image_is_an_image_source() -> None:
    assert isinstance(EncodedImage(png(picture())), ImageSource)
    assert isinstance(RawBGRImage(bytes(12), 2, 2), ImageSource)


def test_jpeg_round_trip() -> None:
    img = picture()
    enc = EncodedImage(jpeg(img))
    assert (enc.format, enc.width, enc.height) == ("jpeg", 64, 48)
    out = enc.decode()
    assert out.dtype == np.uint8
    assert_close(out, img, mean=3)
    assert out.flags.writeable


def test_grey_jpeg_decodes_to_bgr() -> None:
    grey = picture()[:, :, :1].copy()
    data = simplejpeg.encode_jpeg(grey, colorspace="GRAY", colorsubsampling="Gray")
    out = EncodedImage(data).decode()
    assert out.shape == (48, 64, 3)
    assert_close(out[:, :, 2], grey[:, :, 0], mean=2)


def test_progressive_jpeg_from_opencv() -> None:
    ok, buf = cv2.imencode(".jpg", picture(), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok
    assert_close(EncodedImage(buf.tobytes()).decode(), picture(), mean=4)


@pytest.mark.parametrize("mode", ["bgr", "gray", "bgra", "16bit"])
def test_png_variants_decode_to_bgr_uint8(mode: str) -> None:
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
    assert out.shape == (48, 64, 3)
    assert out.dtype == np.uint8
    if mode == "gray":
        np.testing.assert_array_equal(out[:, :, 0], variant)
    else:
        np.testing.assert_array_equal(out, img)


def test_exif_orientation_does_not_swap_the_checked_size() -> None:
    data = with_exif_orientation(png(picture(40, 80)), orientation=6)
    enc = open_image(data, max_pixels=10**6)
    out = enc.decode()
    assert out.shape == (40, 80, 3)
    np.testing.assert_array_equal(out, picture(40, 80))


def test_input_buffer_is_copied() -> None:
    buf = bytearray(png(picture()))
    enc = open_image(memoryview(buf), max_pixels=10**6)
    buf[:] = bytes(len(buf))
    np.testing.assert_array_equal(enc.decode(), picture())


def test_real_photo() -> None:
    if not ASTRONAUT.is_file():
        pytest.skip(f"shared sample image not found at {ASTRONAUT}")
    data = ASTRONAUT.read_bytes()
    enc = open_image(data, max_pixels=512 * 512)
    assert (enc.width, enc.height) == (512, 512)
    img = enc.decode()
    assert img.shape == (512, 512, 3)
    np.testing.assert_array_equal(img, cv2.imdecode(np.frombuffer(data, np.uint8), 1))
    again = EncodedImage(encode_jpeg(img, 90)).decode()
    assert_close(again, img, mean=4)


# --- limits, checked on the header -------------------------------------------------------


def test_size_limit_is_checked_from_the_header_alone() -> None:
    # 20000x20000 claimed by a 33-byte file with no pixel data: refused before any decoding.
    with pytest.raises(PayloadTooLarge) as err:
        open_image(png_header_only(20000, 20000), max_pixels=10**7)
    assert err.value.message == "image is 20000x20000 = 400000000 pixels, the limit is 10000000"
    assert err.value.field == "image"


def test_jpeg_size_limit() -> None:
    data = jpeg(picture(48, 64))
    with pytest.raises(PayloadTooLarge, match="64x48 = 3072 pixels, the limit is 3071"):
        open_image(data, max_pixels=3071, field="frame")
    assert open_image(data, max_pixels=3072).width == 64


def test_header_is_read_without_decoding_pixels() -> None:
    # Corrupt every byte after the header: the size still reads, only decoding fails.
    data = bytearray(png(picture()))
    data[41:-12] = bytes(len(data) - 53)
    enc = EncodedImage(bytes(data))
    assert (enc.width, enc.height) == (64, 48)
    with pytest.raises(InvalidImage, match="cannot be decoded"):
        enc.decode()


@pytest.mark.parametrize(("w", "h"), [(0, 10), (10, 0)])
def test_zero_dimensions(w: int, h: int) -> None:
    with pytest.raises(InvalidImage, match=f"is {w}x{h}; expected a width and height"):
        open_image(png_header_only(w, h), max_pixels=100)


# --- truncated and corrupt files ---------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
@pytest.mark.parametrize("keep", [0.3, 0.66, 0.99])
def test_truncated_files_are_refused_when_opened(fmt: str, keep: float) -> None:
    data = jpeg(picture()) if fmt == "jpeg" else png(picture())
    cut = data[: int(len(data) * keep)]
    with pytest.raises(InvalidImage, match="truncated"):
        open_image(cut, max_pixels=10**6)


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_truncated_files_are_errors_not_grey_pictures(fmt: str) -> None:
    # Built directly, EncodedImage reads only the header; decode must still refuse.
    data = jpeg(picture()) if fmt == "jpeg" else png(picture())
    enc = EncodedImage(data[:-2])
    with pytest.raises(InvalidImage, match="truncated"):
        enc.decode()


def test_jpeg_missing_only_its_end_marker() -> None:
    with pytest.raises(InvalidImage, match="EOI"):
        open_image(jpeg(picture())[:-2], max_pixels=10**6)


def test_jpeg_with_a_trailer_after_the_end_marker_is_accepted() -> None:
    # Some cameras append metadata after EOI; libjpeg-turbo stops at EOI.
    enc = open_image(jpeg(picture()) + b"TRAILER\x00\x01", max_pixels=10**6)
    assert_close(enc.decode(), picture(), mean=3)


def test_corrupt_jpeg_scan_data() -> None:
    data = bytearray(jpeg(picture()))
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(64)
    enc = open_image(bytes(data), max_pixels=10**6)
    with pytest.raises(InvalidImage, match="JPEG cannot be decoded"):
        enc.decode()


def test_broken_headers() -> None:
    with pytest.raises(InvalidImage, match="JPEG is malformed: marker 0xe0"):
        EncodedImage(b"\xff\xd8\xff\xe0" + b"\x00" * 8)
    # Complete on the outside (SOI, SOS, EOI) but no frame header inside.
    with pytest.raises(InvalidImage, match="JPEG header cannot be read"):
        EncodedImage(b"\xff\xd8\xff\xda\x00\x02\x00\xff\xd9")
    with pytest.raises(InvalidImage, match="IHDR"):
        EncodedImage(b"\x89PNG\r\n\x1a\n" + b"\x00" * 4)


def test_png_without_image_data() -> None:
    data = png_header_only(4, 4) + png_chunk(b"IEND", b"")
    with pytest.raises(InvalidImage, match="IDAT"):
        open_image(data, max_pixels=100)


# --- base64 ------------------------------------------------------------------------------


def test_base64_plain_data_url_and_line_breaks() -> None:
    raw = png(picture())
    b64 = base64.b64encode(raw).decode()
    texts = [
        b64,
        "data:image/png;base64," + b64,
        "DATA:image/png;BASE64," + b64,
        base64.encodebytes(raw).decode(),  # a line break every 76 characters
        f"  {b64[:100]}\r\n{b64[100:]}\n",
    ]
    for text in texts:
        img = decode_base64_image(text, max_bytes=10**6, max_pixels=10**6)
        assert (img.format, img.width, img.height) == ("png", 64, 48)
        np.testing.assert_array_equal(img.decode(), picture())


def test_data_url_media_type_is_not_trusted() -> None:
    b64 = base64.b64encode(jpeg(picture())).decode()
    img = decode_base64_image("data:image/png;base64," + b64, max_bytes=10**6, max_pixels=10**6)
    assert img.format == "jpeg"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("@@@@", "image: not valid base64"),
        ("iVBORw0KGgo", "image: not valid base64"),  # missing padding
        ("iVBO-w0K_go=", "image: not valid base64"),  # URL-safe alphabet
        ("iVBORw0KGgo\u00e9", "non-ASCII"),
        ("data:image/png,abc", "expected a base64 data URL"),
        ("", "got nothing"),
        ("  \n ", "got nothing"),
    ],
)
def test_bad_base64(text: str, match: str) -> None:
    with pytest.raises(InvalidImage, match=match) as err:
        decode_base64_image(text, max_bytes=100, max_pixels=100)
    assert err.value.field == "image"


def test_base64_that_is_not_an_image() -> None:
    with pytest.raises(UnsupportedMediaType, match="bytes starting 68 65 6c 6c 6f"):
        decode_base64_image(base64.b64encode(b"hello").decode(), max_bytes=100, max_pixels=100)


def test_base64_over_the_byte_limit_is_refused_before_decoding() -> None:
    b64 = base64.b64encode(png(picture())).decode()
    with pytest.raises(PayloadTooLarge, match="the limit is 100 bytes") as err:
        decode_base64_image(b64, max_bytes=100, max_pixels=10**6, field="frame")
    assert err.value.field == "frame"
    assert str(len(b64)) in err.value.message
    # Invalid characters past the limit are never looked at: the size decides first.
    with pytest.raises(PayloadTooLarge):
        decode_base64_image("@" * 1000, max_bytes=100, max_pixels=10**6)


def test_base64_byte_limit_is_exact() -> None:
    raw = png(picture())
    b64 = base64.b64encode(raw).decode()
    assert decode_base64_image(b64, max_bytes=len(raw), max_pixels=10**6).width == 64
    with pytest.raises(PayloadTooLarge, match=f"{len(raw)} bytes, the limit is {len(raw) - 1}"):
        decode_base64_image(b64, max_bytes=len(raw) - 1, max_pixels=10**6)


def test_base64_pixel_limit() -> None:
    b64 = base64.b64encode(png(picture())).decode()
    with pytest.raises(PayloadTooLarge, match="64x48"):
        decode_base64_image(b64, max_bytes=10**6, max_pixels=1000)


# --- raw BGR -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_raw_bgr_is_a_view(kind: type) -> None:
    img = picture()
    buf = kind(img.tobytes())
    raw = RawBGRImage(buf, 64, 48)
    assert (raw.width, raw.height) == (64, 48)
    arr = raw.decode()
    assert arr.shape == (48, 64, 3)
    np.testing.assert_array_equal(arr, img)
    assert np.shares_memory(arr, np.frombuffer(buf, np.uint8))


def test_raw_bgr_wrong_size_names_both_numbers() -> None:
    buf = picture().tobytes()
    with pytest.raises(InvalidImage) as err:
        RawBGRImage(buf, 1920, 1080)
    assert "6220800" in err.value.message
    assert str(len(buf)) in err.value.message
    assert err.value.field == "image"


def test_raw_bgr_counts_bytes_not_items() -> None:
    # A memoryview over a 3-D array has len() == rows; the size check must use bytes.
    view = picture().data
    assert RawBGRImage(view, 64, 48).decode().shape == (48, 64, 3)


@pytest.mark.parametrize(("w", "h"), [(0, 10), (10, 0), (-2, -3)])
def test_raw_bgr_needs_positive_size(w: int, h: int) -> None:
    with pytest.raises(InvalidImage, match="must be positive"):
        RawBGRImage(b"", w, h, field="frame")


# --- encoding ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "view",
    [
        lambda a: a[:, ::2],  # column-strided
        lambda a: a[::-1],  # flipped: negative row stride
        lambda a: a.transpose(1, 0, 2),  # transposed
        lambda a: a[5:20, 7:30],  # a crop: rows stay packed
    ],
)
def test_encode_any_strides(view: object) -> None:
    img = view(picture())  # type: ignore[operator]
    data = base64.b64decode(encode_jpeg_base64(img, 95))
    assert_close(simplejpeg.decode_jpeg(data, colorspace="BGR"), img, mean=3)


def test_encode_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="quality"):
        encode_jpeg(picture(), 0)
    with pytest.raises(ValueError, match="quality"):
        encode_jpeg(picture(), 101)
    with pytest.raises(ValueError, match=r"shape \(H, W, 3\)"):
        encode_jpeg(picture()[:, :, 0])
    with pytest.raises(ValueError, match="empty"):
        encode_jpeg(np.zeros((0, 4, 3), np.uint8))


@pytest.mark.parametrize(("asked", "header"), [(None, "420"), ("420", "420"), ("444", "444")])
def test_encode_subsamples_chroma_as_asked(asked: Subsampling | None, header: str) -> None:
    img = picture()
    data = encode_jpeg(img, 90) if asked is None else encode_jpeg(img, 90, asked)
    assert simplejpeg.decode_jpeg_header(data)[3] == header
    assert_close(simplejpeg.decode_jpeg(data, colorspace="BGR"), img, mean=4)


def test_full_chroma_keeps_fine_colour_that_halved_chroma_blurs() -> None:
    # One-pixel red and blue stripes: 4:2:0 averages their colours, 4:4:4 keeps them.
    img = np.zeros((32, 32, 3), np.uint8)
    img[:, 0::2] = (0, 0, 255)
    img[:, 1::2] = (255, 0, 0)

    def error(sub: Subsampling) -> float:
        out = simplejpeg.decode_jpeg(encode_jpeg(img, 95, sub), colorspace="BGR")
        return float(np.abs(out.astype(int) - img).mean())

    assert error("444") < 10 < error("420")
