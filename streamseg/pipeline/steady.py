"""A source's pictures kept at one size: cameras switch resolution mid-stream (day/night modes, a bandwidth change),
and a concatenated MPEG-TS file can too, but a recording, a published stream and the model's batch each keep
the size they started with."""

from __future__ import annotations

import dataclasses
import logging

import cv2
import numpy as np

from streamseg.frames import Frame

log = logging.getLogger(__name__)


def letterbox(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` scaled to fit ``size`` (height, width) with its aspect kept, centred on black."""
    h, w = image.shape[:2]
    th, tw = size
    scale = min(th / h, tw / w)
    nh, nw = max(1, min(th, round(h * scale))), max(1, min(tw, round(w * scale)))
    scaled = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    top, left = (th - nh) // 2, (tw - nw) // 2
    return cv2.copyMakeBorder(scaled, top, th - nh - top, left, tw - nw - left, cv2.BORDER_CONSTANT, value=(0, 0, 0))


class SteadySize:
    """Called on each frame of one source: the first frame's size is the source's size from then on; a frame of
    another size is letterboxed to it. Each change of the incoming size is one warning and one count
    (``changes``), not one per frame."""

    def __init__(self, description: str) -> None:
        self.description = description
        self.size: tuple[int, int] | None = None  # (height, width) every frame leaves with
        self._incoming: tuple[int, int] | None = None  # the size the source sends now
        self.changes = 0

    def __call__(self, frame: Frame) -> Frame:
        shape = frame.image.shape[:2]
        if self.size is None:
            self.size = self._incoming = shape
            return frame
        if shape != self._incoming:
            self.changes += 1
            self._incoming = shape
            if shape == self.size:
                log.warning("%s: the picture is %dx%d again", self.description, shape[1], shape[0])
            else:
                log.warning("%s: the picture changed to %dx%d; letterboxed to %dx%d, the size the outputs started "
                            "with", self.description, shape[1], shape[0], self.size[1], self.size[0])
        if shape == self.size:
            return frame
        return dataclasses.replace(frame, image=letterbox(frame.image, self.size))
