"""Decoding and encoding images and drawing on them; no network, no sessions."""

from __future__ import annotations

from .draw import color_for, draw_detections
from .image import (
    EncodedImage,
    RawBGRImage,
    decode_base64_image,
    encode_jpeg,
    encode_jpeg_base64,
    open_image,
    sniff_format,
)

__all__ = [
    "EncodedImage",
    "RawBGRImage",
    "color_for",
    "decode_base64_image",
    "draw_detections",
    "encode_jpeg",
    "encode_jpeg_base64",
    "open_image",
    "sniff_format",
]
