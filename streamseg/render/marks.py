"""Marks drawn over a picture, in place: text with an outline, the legend, the frame rate."""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np


def outlined_text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, colour=(255, 255, 255)) -> None:
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
        outlined_text(img, id2label.get(cid, str(cid)), (12 + box, y + box - 1), scale)


def draw_fps(img: np.ndarray, fps: float) -> None:
    """The frame rate, top right, in place."""
    scale = max(0.4, min(img.shape[:2]) / 700)
    text = f"{fps:5.1f} fps"
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    outlined_text(img, text, (img.shape[1] - tw - 8, th + 8), scale)
