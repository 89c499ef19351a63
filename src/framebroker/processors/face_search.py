"""What every processor that looks for faces shares: one BlazeFace per process, loaded early."""

from __future__ import annotations

import numpy as np

from ..core.processor import ProcessContext, Processor
from ..detectors.blazeface import BlazeFace, shared_blazeface

__all__ = ["FaceSearchProcessor"]


class FaceSearchProcessor(Processor):
    """A processor that runs the face detector. Subclasses set ``self._detector`` in their
    constructor (``None`` for the shared one, or a detector of the caller's for tests)."""

    _detector: BlazeFace | None = None

    @classmethod
    def warm_up(cls) -> None:
        # Reads the model and runs it once, so the first session does not wait for it; raises
        # ModelUnavailable at start-up, rather than mid-session, when it is not installed.
        shared_blazeface().detect(np.zeros((64, 64, 3), np.uint8))

    def setup(self, ctx: ProcessContext) -> None:
        self._face_detector()

    def _face_detector(self) -> BlazeFace:
        if self._detector is None:
            self._detector = shared_blazeface()
        return self._detector
