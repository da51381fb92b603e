"""Draw segmentation results on frames. Pure functions of their inputs, safe on any thread."""

from __future__ import annotations

import functools
from collections.abc import Mapping

import cv2
import numpy as np

from .config import RenderConfig
from .frames import SegmentationResult

PALETTE_SEED = 42


@functools.lru_cache(maxsize=8)
def palette(n: int) -> np.ndarray:
    """``(n, 3)`` uint8 RGB colours, one per class id, from a fixed seed.

    Class ``i`` has the same colour for every ``n > i``, in every frame and every run.
    """
    size = max(256, 1 << (max(n, 1) - 1).bit_length())
    colours = np.random.default_rng(PALETTE_SEED).integers(0, 256, size=(size, 3), dtype=np.uint8)
    out = colours[:n].copy()
    out.setflags(write=False)
    return out


def blend(image: np.ndarray, label_map: np.ndarray, colours: np.ndarray, alpha: float) -> np.ndarray:
    """``round((1 - alpha) * image + alpha * colours[label_map])`` per pixel, as uint8.

    Pixels labelled -1 (no instance/panoptic segment) keep the image's colour.
    """
    if label_map.dtype.kind == "i" and label_map.min(initial=0) < 0:
        void = label_map < 0
        out = cv2.addWeighted(image, 1.0 - alpha, colours[np.where(void, 0, label_map)], alpha, 0.0)
        out[void] = image[void]
        return out
    return cv2.addWeighted(image, 1.0 - alpha, colours[label_map], alpha, 0.0)


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, colour=(255, 255, 255)) -> None:
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)


def draw_legend(img: np.ndarray, class_ids: np.ndarray, colours: np.ndarray, id2label: Mapping[int, str]) -> None:
    """A colour swatch and name for each class in ``class_ids``, top left, in place."""
    scale = max(0.35, min(img.shape[:2]) / 900)
    row = int(22 * scale / 0.5)
    box = max(6, row - 6)
    for i, cid in enumerate(class_ids.tolist()):
        y = 6 + i * row
        if y + box > img.shape[0]:
            break
        cv2.rectangle(img, (6, y), (6 + box, y + box), tuple(int(c) for c in colours[cid]), -1)
        cv2.rectangle(img, (6, y), (6 + box, y + box), (0, 0, 0), 1)
        _text(img, id2label.get(cid, str(cid)), (12 + box, y + box - 1), scale)


class Renderer:
    """Turns a :class:`SegmentationResult` into an annotated RGB picture."""

    def __init__(self, config: RenderConfig, id2label: Mapping[int, str], num_labels: int) -> None:
        self.config = config
        self.id2label = dict(id2label)
        self.colours = palette(max(num_labels, 1))

    def __call__(self, result: SegmentationResult, fps: float | None = None) -> np.ndarray:
        cfg = self.config
        img = blend(result.frame.image, result.label_map, self.colours, cfg.alpha)
        if cfg.legend:
            labels = result.label_map.ravel()
            present = np.flatnonzero(np.bincount(labels[labels >= 0], minlength=len(self.colours)))
            draw_legend(img, present, self.colours, self.id2label)
        if cfg.show_fps and fps is not None:
            scale = max(0.4, min(img.shape[:2]) / 700)
            text = f"{fps:5.1f} fps"
            (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
            _text(img, text, (img.shape[1] - tw - 8, th + 8), scale)
        return img
