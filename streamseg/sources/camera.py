"""A local camera through OpenCV."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from fractions import Fraction

import numpy as np

from streamseg.errors import SourceError
from streamseg.frames import Frame
from streamseg.roles import SourceBase

log = logging.getLogger(__name__)


class CameraSource(SourceBase):
    """A local camera through OpenCV; timestamps are wall-clock milliseconds from the first frame.

    ``capture_factory`` builds the capture object (``cv2.VideoCapture`` by default):
    tests pass a stand-in, since no webcam exists on a build machine.
    """

    live = True

    def __init__(self, index: int, *, capture_factory: Callable[[int], object] | None = None) -> None:
        import cv2

        factory = capture_factory or cv2.VideoCapture
        if index < 0:  # OpenCV's "any camera" (-1) crashes some backends outright
            raise SourceError(f"invalid camera {index}: expected 0 or more (the first camera is 0)")
        self.description = f"camera {index}"
        self._cap = factory(index)
        if not self._cap.isOpened():
            self._cap.release()
            raise SourceError(f"camera {index} not found or cannot be opened")
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0)
        self.fps = fps if 1 <= fps <= 240 else 30.0
        self._closed = False

    def __iter__(self) -> Iterator[Frame]:
        import cv2

        start = None
        index = 0
        while True:
            ok, bgr = self._cap.read()
            now = time.monotonic()
            if not ok or bgr is None:
                if index == 0:
                    raise SourceError(f"{self.description} opened but delivered no frame")
                log.warning("%s stopped delivering frames after %d", self.description, index)
                return
            start = now if start is None else start
            rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            yield Frame(index=index, image=rgb, pts=int((now - start) * 1000), time_base=Fraction(1, 1000))
            index += 1

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._cap.release()
