"""One small class per ``--style``: each draws a frame's colours (by class, or by instance track) over the
picture. Pure: the same inputs give the same picture, on any thread.

A style gets the picture, the id of every pixel (-1: nothing drawn), the colour of each id, and a
:class:`Backdrop` for the styles that keep some classes and change the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from streamseg.config import Style


def blend(image: np.ndarray, label_map: np.ndarray, colours: np.ndarray, alpha: float) -> np.ndarray:
    """``round((1 - alpha) * image + alpha * colours[label_map])`` per pixel, as uint8.

    Pixels labelled -1 (no instance/panoptic segment) keep the image's colour.
    """
    if label_map.dtype.kind == "i" and label_map.min(initial=0) < 0:
        void = label_map < 0
        out = cv2.addWeighted(image, 1.0 - alpha, np.take(colours, np.where(void, 0, label_map), axis=0), alpha, 0.0)
        out[void] = image[void]
        return out
    # np.take is ~4x faster than colours[label_map] for a whole frame (the same gather)
    return cv2.addWeighted(image, 1.0 - alpha, np.take(colours, label_map, axis=0), alpha, 0.0)


def blur_kernel_size(height: int, width: int) -> int:
    """The blur-background kernel for a picture of this size (odd, at least 3)."""
    return max(3, (min(height, width) // 20) | 1)


def boundaries(ids: np.ndarray) -> np.ndarray:
    """Pixels whose right or lower neighbour has another id (a 2-pixel line along every edge)."""
    edge = np.zeros(ids.shape, bool)
    edge[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    edge[:-1] |= ids[:-1] != ids[1:]
    edge[:, 1:] |= edge[:, :-1].copy()
    edge[1:] |= edge[:-1].copy()
    return edge


@dataclass(frozen=True)
class Backdrop:
    """What blur- and replace-background need: whether each pixel keeps its picture (``--keep``), and the
    replacement picture for a shape (``--background``)."""

    keep: np.ndarray  # bool (H, W)
    background: Callable[[tuple[int, ...]], np.ndarray]
    alpha: float


class Fill:
    """The class (or track) colours mixed with the picture at ``--alpha``."""

    def __call__(self, image: np.ndarray, ids: np.ndarray, colours: np.ndarray, backdrop: Backdrop) -> np.ndarray:
        return blend(image, ids, colours, backdrop.alpha)


class Contour:
    """Only the outlines of each segment, in its colour."""

    def __call__(self, image: np.ndarray, ids: np.ndarray, colours: np.ndarray, backdrop: Backdrop) -> np.ndarray:
        return _outlined(image.copy(), ids, colours)


class FillContour:
    """Fill, then the outlines."""

    def __call__(self, image: np.ndarray, ids: np.ndarray, colours: np.ndarray, backdrop: Backdrop) -> np.ndarray:
        return _outlined(blend(image, ids, colours, backdrop.alpha), ids, colours)


class SideBySide:
    """The picture as it is beside the fill."""

    def __call__(self, image: np.ndarray, ids: np.ndarray, colours: np.ndarray, backdrop: Backdrop) -> np.ndarray:
        return np.hstack([image, blend(image, ids, colours, backdrop.alpha)])


class Mask:
    """The colours alone; black where nothing is drawn."""

    def __call__(self, image: np.ndarray, ids: np.ndarray, colours: np.ndarray, backdrop: Backdrop) -> np.ndarray:
        img = np.take(colours, np.maximum(ids, 0), axis=0)
        img[ids < 0] = 0
        return img


class BlurBackground:
    """The ``--keep`` classes as they are; the rest blurred."""

    def __call__(self, image: np.ndarray, ids: np.ndarray, colours: np.ndarray, backdrop: Backdrop) -> np.ndarray:
        k = blur_kernel_size(*image.shape[:2])
        return np.where(backdrop.keep[..., None], image, cv2.GaussianBlur(image, (k, k), 0)).astype(np.uint8)


class ReplaceBackground:
    """The ``--keep`` classes as they are; the rest replaced by ``--background``."""

    def __call__(self, image: np.ndarray, ids: np.ndarray, colours: np.ndarray, backdrop: Backdrop) -> np.ndarray:
        return np.where(backdrop.keep[..., None], image, backdrop.background(image.shape)).astype(np.uint8)


STYLES = {
    Style.FILL: Fill(), Style.CONTOUR: Contour(), Style.FILL_CONTOUR: FillContour(), Style.SIDE_BY_SIDE: SideBySide(),
    Style.MASK: Mask(), Style.BLUR_BACKGROUND: BlurBackground(), Style.REPLACE_BACKGROUND: ReplaceBackground(),
}
KEEPS_CLASSES = (Style.BLUR_BACKGROUND, Style.REPLACE_BACKGROUND)  # the styles that read Backdrop.keep


def _outlined(img: np.ndarray, ids: np.ndarray, colours: np.ndarray) -> np.ndarray:
    edge = boundaries(ids) & (ids >= 0)
    img[edge] = colours[ids[edge]]
    return img
