"""Video source strings: what a string names (a file, a network stream, a camera) before
anything is opened, the error every video source raises, and the demo clip shipped in the
package.

A source string is what ``serve --source``, ``extract-frames`` and the video tools take:
a path, a ``file://`` URL, an ``rtsp://``/``rtmp://``/``http(s)://`` URL or a camera number.
Passwords in URLs never reach a log or a message (:attr:`SourceSpec.label`).
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from ..errors import InvalidInput

__all__ = [
    "NETWORK_SCHEMES",
    "SourceError",
    "SourceKind",
    "SourceSpec",
    "demo_clip",
    "parse_source",
]

SourceKind = Literal["file", "network", "device"]

NETWORK_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "http", "https"})
_DEVICE_NUMBER = re.compile(r"\d+")


class SourceError(InvalidInput):
    """A video source cannot be opened or read: no such file, no video stream, undecodable
    data, an unsupported URL scheme, or a network source or camera that is unreachable or
    dropped. ``field`` is ``"source"``. URLs in the message have their password masked.
    """

    code = "source_error"

    def __init__(self, message: str, *, field: str | None = "source") -> None:
        super().__init__(message, field=field)


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """What a source string names, before anything is opened.

    ``url`` is what FFmpeg is given (``/dev/video0`` for a bare ``0``), ``format`` forces a
    demuxer (``v4l2`` for cameras), ``options`` are FFmpeg demuxer options, and ``label`` is
    the source with any password masked, for logs and messages.
    """

    uri: str
    kind: SourceKind
    url: str
    format: str | None
    options: Mapping[str, str]
    label: str


def _redact(url: str) -> str:
    """The URL with its password, if any, replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def parse_source(uri: str, *, options: Mapping[str, str] | None = None) -> SourceSpec:
    """Classify ``uri`` as a file, a network stream or a camera; nothing is opened.

    - ``rtsp://``, ``rtsps://``, ``rtmp://``, ``rtmps://``, ``http://``, ``https://``: a
      network stream. RTSP asks for TCP first (``rtsp_flags=prefer_tcp``), so a lossy link
      does not smear frames, and still falls back to UDP.
    - a bare integer ``N``: the camera ``/dev/videoN``; any path under ``/dev/``: a camera.
      Both are read with FFmpeg's ``v4l2`` input (Linux).
    - ``file://PATH`` or anything else: a file path.

    ``options`` go to FFmpeg's demuxer and override the defaults above (for example
    ``{"rtsp_transport": "udp"}`` or, for a camera, ``{"video_size": "1280x720"}``).
    Raises :class:`SourceError` for an empty string or an unsupported URL scheme.
    """
    text = uri.strip()
    extra = dict(options or {})
    if not text:
        raise SourceError("expected a video file path, a stream URL or a camera, got ''")
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        if scheme == "file":
            path = urlsplit(text).path
            return SourceSpec(uri, "file", path, None, extra, path)
        if scheme not in NETWORK_SCHEMES:
            supported = ", ".join(f"{s}://" for s in sorted(NETWORK_SCHEMES))
            raise SourceError(
                f"source {_redact(text)!r}: unsupported URL scheme {scheme!r}; expected a "
                f"file path, a camera (0, /dev/video0) or one of {supported}"
            )
        defaults = {"rtsp_flags": "prefer_tcp"} if scheme in {"rtsp", "rtsps"} else {}
        return SourceSpec(uri, "network", text, None, defaults | extra, _redact(text))
    if _DEVICE_NUMBER.fullmatch(text):
        device = f"/dev/video{int(text)}"
        return SourceSpec(uri, "device", device, "v4l2", extra, device)
    if text.startswith("/dev/"):
        return SourceSpec(uri, "device", text, "v4l2", extra, text)
    return SourceSpec(uri, "file", text, None, extra, text)


def demo_clip() -> Path:
    """The sample clip shipped in the package, for ``framebroker demo`` (20 s, 640x480).

    Raises :class:`SourceError` if the installation lacks it (package data left out, or an
    install from a zip archive, which has no file path to hand to FFmpeg).
    """
    resource = importlib.resources.files("framebroker.data") / "demo.mp4"
    if isinstance(resource, Path) and resource.is_file():
        return resource
    raise SourceError(
        "the demo clip framebroker/data/demo.mp4 is not installed as a file; reinstall "
        "framebroker with its package data"
    )
