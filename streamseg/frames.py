"""The data that travels between threads: frames and segmentation results."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
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
    captured: float = field(default_factory=time.monotonic, compare=False)  # when it was read (time.monotonic())
    source: int = 0  # which source of a multi-source run it came from

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

    def time(self, fps: float | None) -> float:
        """Seconds from the timestamps, or, for a still, from the index at ``fps`` (25 when unknown)."""
        seconds = self.seconds
        return seconds if seconds is not None else self.index / (fps or 25.0)

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``."""
        return self.image.shape[1], self.image.shape[0]

    def __repr__(self) -> str:
        return (f"Frame(index={self.index}, pts={self.pts}, time_base={self.time_base}, "
                f"image=<{self.image.shape[1]}x{self.image.shape[0]}>)")

    def with_image(self, image: np.ndarray) -> Frame:
        """The same frame (index, timing, name) carrying another picture."""
        return Frame(index=self.index, image=image, pts=self.pts, time_base=self.time_base, name=self.name,
                     captured=self.captured, source=self.source)


@dataclass(frozen=True, slots=True, kw_only=True)
class Segment:
    """One labelled region: a class (semantic) or one instance / panoptic segment.

    ``bbox`` is ``(x, y, width, height)`` in pixels; ``score`` is ``None`` for semantic classes.
    """

    id: int
    label_id: int
    label: str
    score: float | None
    area: int
    bbox: tuple[int, int, int, int]
    track_id: int | None = None  # instance/panoptic: the object's number while it is seen (streamseg.models.tracking)


@dataclass(frozen=True, slots=True, kw_only=True)
class SegmentationResult:
    """The model's answer for one frame, at the frame's resolution.

    ``label_map`` holds a class id per pixel; for instance and panoptic results it is
    int32 with -1 where no segment lies. ``segment_map`` (instance/panoptic only) holds
    the segment id per pixel, and ``segment_info`` one ``(id, label_id, score)`` per segment.
    """

    frame: Frame
    label_map: np.ndarray  # (H, W) integer class ids
    task: str = "semantic"
    segment_map: np.ndarray | None = None
    segment_info: tuple[tuple[int, int, float], ...] = ()
    id2label: Mapping[int, str] = field(default_factory=dict)
    drawn: np.ndarray | None = None  # the style already blended on the model's device (streamseg.render.device)
    track_ids: tuple[int, ...] = ()  # instance/panoptic: one track id per segment_info entry (streamseg.models.tracking)

    def __repr__(self) -> str:
        h, w = self.label_map.shape
        return (f"SegmentationResult(frame={self.frame.index}, task={self.task}, "
                f"label_map=<{w}x{h} {self.label_map.dtype}>, segments={len(self.segment_info) or '-'})")

    def segments(self) -> list[Segment]:
        """Every segment with its area and box (semantic: one per class present, by class id)."""
        if self.segment_map is None:
            ids = self.label_map
            flat = ids.ravel()
            if flat.size and flat.min() < 0:  # -1: no segment (text prompts that nothing reached)
                flat = flat[flat >= 0]
            infos = [(int(c), int(c), None) for c in np.flatnonzero(np.bincount(flat))]
        else:
            ids = self.segment_map
            infos = list(self.segment_info)
        area, boxes, offset = _areas_and_boxes(ids)
        tracks = self.track_ids if len(self.track_ids) == len(infos) else (None,) * len(infos)
        out = []
        for (seg_id, label_id, score), track in zip(infos, tracks):
            k = int(seg_id) + offset
            found = 0 <= k < len(area) and area[k] > 0
            out.append(Segment(id=int(seg_id), label_id=int(label_id), label=self.id2label.get(int(label_id), str(label_id)),
                               score=None if score is None else float(score), area=int(area[k]) if found else 0,
                               bbox=boxes(k) if found else (0, 0, 0, 0), track_id=track))
        return out


def _areas_and_boxes(ids: np.ndarray):
    """Every id's pixel count and a function giving its box ``(x, y, w, h)``, in one pass over the map.

    Ids are shifted by ``offset`` (1 when the map holds -1, "no segment") to index the arrays.
    """
    h, w = ids.shape
    offset = 1 if ids.size and ids.min() < 0 else 0
    keys = ids.ravel().astype(np.intp) + offset
    n = int(keys.max()) + 1 if keys.size else 0
    area = np.bincount(keys, minlength=n)
    rows = np.zeros((n, h), bool)
    cols = np.zeros((n, w), bool)
    rows[keys.reshape(h, w), np.arange(h)[:, None]] = True  # which rows / columns each id touches
    cols[keys.reshape(h, w), np.arange(w)[None, :]] = True

    def box(k: int) -> tuple[int, int, int, int]:
        y0, y1 = int(rows[k].argmax()), h - 1 - int(rows[k][::-1].argmax())
        x0, x1 = int(cols[k].argmax()), w - 1 - int(cols[k][::-1].argmax())
        return (x0, y0, x1 - x0 + 1, y1 - y0 + 1)

    return area, box, offset
