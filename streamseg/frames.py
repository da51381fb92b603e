"""The data that travels between threads: frames and segmentation results."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np


@dataclass(frozen=True, slots=True, kw_only=True)
class Frame:
    """One decoded picture.

    ``image`` is RGB, uint8, ``(H, W, 3)``. ``pts`` counts ``time_base`` units
    (both ``None`` for stills); ``index`` counts frames from 0 in decode order.
    ``name`` is the still's file name when the source is a folder of images.
    """

    index: int
    image: np.ndarray
    pts: int | None = None
    time_base: Fraction | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        img = self.image
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"Frame.image must be uint8 (H, W, 3), got {img.dtype} {img.shape}")

    @property
    def seconds(self) -> float | None:
        """Presentation time in seconds, or ``None`` for a still."""
        if self.pts is None or self.time_base is None:
            return None
        return float(self.pts * self.time_base)

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``."""
        return self.image.shape[1], self.image.shape[0]

    def __repr__(self) -> str:
        return (f"Frame(index={self.index}, pts={self.pts}, time_base={self.time_base}, "
                f"image=<{self.image.shape[1]}x{self.image.shape[0]}>)")

    def with_image(self, image: np.ndarray) -> Frame:
        """The same frame (index, timing, name) carrying another picture."""
        return Frame(index=self.index, image=image, pts=self.pts, time_base=self.time_base, name=self.name)


@dataclass(frozen=True, slots=True, kw_only=True)
class SegmentationResult:
    """The model's answer for one frame: a class id for every pixel, at the frame's resolution."""

    frame: Frame
    label_map: np.ndarray  # (H, W) integer class ids

    def __repr__(self) -> str:
        h, w = self.label_map.shape
        return f"SegmentationResult(frame={self.frame.index}, label_map=<{w}x{h} {self.label_map.dtype}>)"
