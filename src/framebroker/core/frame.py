"""One unit of work for a session: an image (decoded only if someone needs it), detections, meta."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from .detections import Detections

__all__ = ["Frame", "ImageSource", "RawImage"]

Image = NDArray[np.uint8]


@runtime_checkable
class ImageSource(Protocol):
    """Something that can become a BGR ``uint8`` array of shape (height, width, 3).

    ``width`` and ``height`` are known without decoding (from a header, a declared size or the
    array itself), so limits are checked before any pixel work is done.
    """

    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...

    def decode(self) -> Image: ...


@dataclass(frozen=True, slots=True)
class RawImage:
    """An image that is already a BGR array."""

    array: Image

    def __post_init__(self) -> None:
        a = self.array
        if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
            raise ValueError(f"expected a uint8 array of shape (H, W, 3), got {a.dtype} {a.shape}")

    @property
    def width(self) -> int:
        return int(self.array.shape[1])

    @property
    def height(self) -> int:
        return int(self.array.shape[0])

    def decode(self) -> Image:
        return self.array


@dataclass(slots=True, eq=False)
class Frame:
    """A frame as it moves through a pipeline.

    ``image`` decodes the source the first time a processor asks for it, in the worker thread
    running the pipeline, and keeps the result; a pipeline that never looks at pixels never
    pays for decoding. Processors may replace ``detections`` (a tracker attaches track ids)
    and add to ``meta``. ``results`` holds the outputs of the processors that already ran on
    this frame, so a later processor can build on an earlier one's (a traffic monitor reading
    a line counter's crossings).
    """

    source: ImageSource | None = None
    detections: Detections | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    received_at: float = field(default_factory=time.time)
    index: int = -1
    results: dict[str, Any] = field(default_factory=dict)
    _image: Image | None = None

    @classmethod
    def from_array(cls, image: Image, **kwargs: Any) -> Frame:
        return cls(source=RawImage(image), **kwargs)

    @property
    def has_image(self) -> bool:
        return self.source is not None

    @property
    def image(self) -> Image:
        """The BGR pixels; raises ``LookupError`` if the frame carries no image."""
        if self._image is None:
            if self.source is None:
                raise LookupError("this frame carries no image")
            self._image = self.source.decode()
        return self._image

    @property
    def timestamp(self) -> float:
        """Seconds on the frame's own clock: ``meta['timestamp']`` if given, else arrival."""
        ts = self.meta.get("timestamp")
        if isinstance(ts, int | float) and not isinstance(ts, bool):
            return float(ts)
        return self.received_at
