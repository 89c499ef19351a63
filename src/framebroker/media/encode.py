"""Video out: BGR frames to an H.264 MP4 held in memory, one frame at a time or all at once.

:class:`Mp4Encoder` is fed frames as they arrive and keeps only the compressed bytes, so a
window of 30 frames costs the size of its MP4, not 30 decoded pictures, and closing a window
only flushes the encoder. :func:`encode_mp4` is the one-shot version.

The settings favour latency over size: ``preset=ultrafast``, ``tune=zerolatency`` (no
look-ahead, no B-frames: each frame is coded as it is added), ``yuv420p`` (what every
decoder reads), one encoder thread by default because a server encodes many sessions side by
side in its worker pool. H.264 in 4:2:0 needs even sides, so an odd width or height is padded
by one pixel repeating the last column or row; :attr:`Mp4Encoder.width` and
:attr:`Mp4Encoder.height` say what the video holds.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

import av
import av.container
import numpy as np
from av.video.stream import VideoStream
from numpy.typing import NDArray

__all__ = ["EncoderOptions", "Mp4Encoder", "encode_mp4", "even_size"]

Image = NDArray[np.uint8]

_PRESETS = frozenset(
    {"ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower"}
)


@dataclass(frozen=True, slots=True)
class EncoderOptions:
    """libx264 settings; ``crf`` 0-51 (lower is better and bigger), ``threads`` 0 = FFmpeg's
    choice."""

    fps: float = 30.0
    preset: str = "ultrafast"
    crf: int = 23
    zerolatency: bool = True
    threads: int = 1

    def __post_init__(self) -> None:
        if not (0 < self.fps <= 1000):
            raise ValueError(f"fps must be in (0, 1000], got {self.fps!r}")
        if self.preset not in _PRESETS:
            raise ValueError(f"preset must be one of {sorted(_PRESETS)}, got {self.preset!r}")
        if not (0 <= self.crf <= 51):
            raise ValueError(f"crf must be in 0..51, got {self.crf!r}")
        if not (0 <= self.threads <= 64):
            raise ValueError(f"threads must be in 0..64, got {self.threads!r}")


def even_size(width: int, height: int) -> tuple[int, int]:
    """The size a ``width`` x ``height`` picture is coded at: each side rounded up to even."""
    return width + (width & 1), height + (height & 1)


class Mp4Encoder:
    """An H.264 MP4 written into memory as frames are added.

    Every frame must be a BGR ``uint8`` array of shape (height, width, 3) given here; a frame
    of another size raises ``ValueError`` (a stream cannot change size mid-way: start a new
    encoder). Not thread-safe: one caller at a time, which may be any thread.
    """

    def __init__(self, width: int, height: int, options: EncoderOptions | None = None) -> None:
        if width < 1 or height < 1:
            raise ValueError(f"expected a width and height of at least 1, got {width}x{height}")
        self.options = options or EncoderOptions()
        self.source_size = (width, height)
        self.width, self.height = even_size(width, height)
        self.frames = 0
        self._buffer = io.BytesIO()
        self._container: av.container.OutputContainer | None = av.open(
            self._buffer, "w", format="mp4"
        )
        self._stream: VideoStream = self._container.add_stream(
            "libx264", rate=Fraction(self.options.fps).limit_denominator(1001)
        )
        self._stream.width = self.width
        self._stream.height = self.height
        self._stream.pix_fmt = "yuv420p"
        opts: dict[str, object] = {"preset": self.options.preset, "crf": str(self.options.crf)}
        if self.options.zerolatency:
            opts["tune"] = "zerolatency"
        self._stream.options = opts
        self._stream.codec_context.thread_count = self.options.threads

    @property
    def closed(self) -> bool:
        return self._container is None

    @property
    def nbytes(self) -> int:
        """Bytes of MP4 written so far (the encoder may still hold a few frames)."""
        return self._buffer.tell()

    def add(self, image: Image) -> None:
        """Encode one frame; raises ``ValueError`` for a wrong shape or type, ``RuntimeError``
        once finished."""
        if self._container is None:
            raise RuntimeError("this encoder is finished; start a new one")
        w, h = self.source_size
        if image.dtype != np.uint8 or image.shape != (h, w, 3):
            raise ValueError(
                f"expected a uint8 BGR frame of shape {(h, w, 3)}, got {image.dtype} {image.shape}"
            )
        if (w, h) != (self.width, self.height):
            image = np.pad(image, ((0, self.height - h), (0, self.width - w), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts = self.frames
        self.frames += 1
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def finish(self) -> bytes:
        """Flush the encoder and return the whole MP4; raises ``ValueError`` if no frame was
        added, ``RuntimeError`` if already finished."""
        if self._container is None:
            raise RuntimeError("this encoder is already finished")
        if self.frames == 0:
            self.close()
            raise ValueError("cannot write a video of zero frames")
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None
        return self._buffer.getvalue()

    def close(self) -> None:
        """Abandon the video (nothing is returned); safe to call twice."""
        if self._container is not None:
            container, self._container = self._container, None
            # An abandoned stream may fail to write its trailer; nobody reads it.
            with contextlib.suppress(av.FFmpegError, ValueError):
                container.close()


def encode_mp4(frames: Iterable[Image], options: EncoderOptions | None = None) -> bytes:
    """The MP4 of ``frames`` (all the same size). Raises ``ValueError`` for no frames or a
    frame whose shape differs from the first one's."""
    encoder: Mp4Encoder | None = None
    try:
        for image in frames:
            if encoder is None:
                if image.ndim != 3:
                    raise ValueError(f"expected a BGR frame (H, W, 3), got shape {image.shape}")
                encoder = Mp4Encoder(image.shape[1], image.shape[0], options)
            encoder.add(image)
        if encoder is None:
            raise ValueError("cannot write a video of zero frames")
        return encoder.finish()
    finally:
        if encoder is not None:
            encoder.close()
