"""Images in and out: sniffed by magic bytes, sized from the header, decoded only on demand.

Limits are checked on the header (a 20000x20000 PNG of 50 kB is refused before a single
pixel is inflated). JPEG goes through simplejpeg (libjpeg-turbo); PNG through OpenCV.
"""

from __future__ import annotations

import base64
import binascii
import struct

import cv2
import numpy as np
import simplejpeg
from numpy.typing import NDArray

from ..errors import InvalidImage, PayloadTooLarge, UnsupportedMediaType

__all__ = [
    "EncodedImage",
    "RawBGRImage",
    "decode_base64_image",
    "encode_jpeg",
    "encode_jpeg_base64",
    "open_image",
    "sniff_format",
]

Image = NDArray[np.uint8]
Buffer = bytes | bytearray | memoryview

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"IEND"


def sniff_format(data: Buffer, *, field: str = "image") -> str:
    """``"jpeg"`` or ``"png"`` from the magic bytes; anything else is unsupported."""
    head = bytes(data[:8])
    if head.startswith(JPEG_MAGIC):
        return "jpeg"
    if head == PNG_MAGIC:
        return "png"
    raise UnsupportedMediaType(
        f"{field}: expected a JPEG or PNG image, got bytes starting {head.hex(' ') or '(none)'}",
        field=field,
    )


def _png_size(data: bytes, field: str) -> tuple[int, int]:
    # IHDR is always the first chunk: length(4) "IHDR"(4) width(4) height(4).
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise InvalidImage(f"{field}: PNG header is truncated or has no IHDR chunk", field=field)
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def _jpeg_size(data: bytes, field: str) -> tuple[int, int]:
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError as exc:
        raise InvalidImage(f"{field}: JPEG header cannot be read: {exc}", field=field) from None
    return int(width), int(height)


class EncodedImage:
    """A JPEG or PNG file in memory; ``width``/``height`` come from its header."""

    __slots__ = ("data", "field", "format", "height", "width")

    def __init__(self, data: Buffer, *, field: str = "image") -> None:
        self.data = bytes(data)
        self.field = field
        self.format = sniff_format(self.data, field=field)
        if self.format == "png":
            self.width, self.height = _png_size(self.data, field)
        else:
            self.width, self.height = _jpeg_size(self.data, field)

    def decode(self) -> Image:
        """BGR pixels; raises :class:`InvalidImage` for a truncated or corrupt file."""
        f = self.field
        if self.format == "jpeg":
            try:
                img = simplejpeg.decode_jpeg(self.data, colorspace="BGR")
            except ValueError as exc:
                raise InvalidImage(f"{f}: JPEG cannot be decoded: {exc}", field=f) from None
            return np.asarray(img, dtype=np.uint8)
        if PNG_IEND not in self.data[-16:]:
            raise InvalidImage(f"{f}: PNG data is truncated (no IEND chunk)", field=f)
        arr = np.frombuffer(self.data, np.uint8)
        decoded = cv2.imdecode(arr, cv2.IMREAD_COLOR)
        if decoded is None:
            raise InvalidImage(f"{f}: PNG cannot be decoded", field=f)
        return np.asarray(decoded, dtype=np.uint8)


def open_image(data: Buffer, *, max_pixels: int, field: str = "image") -> EncodedImage:
    """Sniff and size an encoded image, refusing empty or oversized ones before decoding."""
    img = EncodedImage(data, field=field)
    if img.width <= 0 or img.height <= 0:
        raise InvalidImage(
            f"{field}: image has no pixels ({img.width}x{img.height})", field=field
        )
    pixels = img.width * img.height
    if pixels > max_pixels:
        raise PayloadTooLarge(
            f"{field}: image is {img.width}x{img.height} = {pixels} pixels, "
            f"the limit is {max_pixels}",
            field=field,
        )
    return img


def decode_base64_image(
    text: str, *, max_bytes: int, max_pixels: int, field: str = "image"
) -> EncodedImage:
    """Base64 (optionally a ``data:image/...;base64,`` URL) to a sized :class:`EncodedImage`."""
    if text.startswith("data:"):
        head, sep, text = text.partition(",")
        if not sep or not head.endswith(";base64"):
            raise InvalidImage(f"{field}: data URL must be base64-encoded", field=field)
    if len(text) > max_bytes * 4 // 3 + 4:
        raise PayloadTooLarge(
            f"{field}: {len(text)} base64 characters is over the limit of {max_bytes} bytes",
            field=field,
        )
    compact = "".join(text.split()) if any(c.isspace() for c in text[:1024]) else text
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidImage(f"{field}: not valid base64: {exc}", field=field) from None
    if not data:
        raise InvalidImage(f"{field}: image is empty", field=field)
    return open_image(data, max_pixels=max_pixels, field=field)


class RawBGRImage:
    """Raw BGR pixels of a declared size; the byte count must match exactly."""

    __slots__ = ("buffer", "height", "width")

    def __init__(self, data: Buffer, width: int, height: int, *, field: str = "image") -> None:
        if width <= 0 or height <= 0:
            raise InvalidImage(
                f"{field}: width and height must be positive, got {width}x{height}", field=field
            )
        expected = width * height * 3
        if len(data) != expected:
            raise InvalidImage(
                f"{field}: raw BGR {width}x{height} needs {expected} bytes, received {len(data)}",
                field=field,
            )
        self.buffer = data
        self.width = width
        self.height = height

    def decode(self) -> Image:
        """A view on the received bytes: no copy."""
        return np.frombuffer(self.buffer, np.uint8).reshape(self.height, self.width, 3)


def encode_jpeg(image: Image, quality: int = 90) -> bytes:
    """JPEG-encode BGR pixels with libjpeg-turbo."""
    return bytes(
        simplejpeg.encode_jpeg(
            np.ascontiguousarray(image), quality=quality, colorspace="BGR", fastdct=True
        )
    )


def encode_jpeg_base64(image: Image, quality: int = 90) -> str:
    return base64.b64encode(encode_jpeg(image, quality)).decode("ascii")
