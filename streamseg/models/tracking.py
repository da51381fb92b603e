"""Track IDs for instance and panoptic segments: the same object keeps the same number while it is seen.

A :class:`SegmentTracker` matches each frame's segments to the tracks it knows by mask IoU within
one class, as an optimal assignment (Hungarian, ``scipy.optimize.linear_sum_assignment``) on
subsampled masks. A track that finds no match is kept for ``buffer`` frames (a missed detection,
an occlusion) and can take up its object again; IDs are never reused in a run. :class:`Tracked`
wraps a ``segment`` function and gives every result its ``track_ids``, per source, on the
inference thread, so the exports, the labels, the masks and the colours all see the same IDs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from streamseg.frames import Frame, SegmentationResult


@dataclass
class _Track:
    label: int
    mask: np.ndarray  # bool, subsampled, where the object was last seen
    last: int  # the frame number it was last seen in


class SegmentTracker:
    """Segment id -> track id, frame after frame, for one source. Stateful: call it with frames in order."""

    def __init__(self, *, min_iou: float = 0.3, buffer: int = 30, stride: int = 4) -> None:
        self.min_iou, self.buffer, self.stride = min_iou, buffer, stride
        self._tracks: dict[int, _Track] = {}
        self._next = 1
        self._frame = -1

    def __call__(self, segment_map: np.ndarray, infos: Sequence[tuple[int, int, float]]) -> dict[int, int]:
        from scipy.optimize import linear_sum_assignment

        self._frame += 1
        cur = segment_map[::self.stride, ::self.stride]
        ids = [int(seg_id) for seg_id, _, _ in infos]
        labels = [int(label) for _, label, _ in infos]
        masks = np.stack([(cur == i).ravel() for i in ids]) if ids else np.zeros((0, cur.size), bool)
        tracks = [(tid, t) for tid, t in self._tracks.items() if t.mask.size == cur.size]
        out: dict[int, int] = {}
        if ids and tracks:
            old = np.stack([t.mask for _, t in tracks]).astype(np.float32)
            inter = old @ masks.T.astype(np.float32)
            area_old, area_new = old.sum(1)[:, None], masks.sum(1)[None, :]
            union = area_old + area_new - inter
            # The mean of IoU and the overlap of the smaller mask: a partly hidden object (its visible part shrinks)
            # still matches, and of two objects merged into one mask the larger keeps it.
            iou = 0.5 * (inter / np.maximum(union, 1) + inter / np.maximum(np.minimum(area_old, area_new), 1))
            same = np.array([[t.label == label for label in labels] for _, t in tracks])
            iou = np.where(same & (iou >= self.min_iou), iou, 0.0)
            rows, cols = linear_sum_assignment(-iou)
            for r, c in zip(rows, cols):
                if iou[r, c] > 0:
                    out[ids[c]] = tracks[r][0]
        for k, seg_id in enumerate(ids):
            tid = out.get(seg_id)
            if tid is None:
                tid = out[seg_id] = self._next
                self._next += 1
            self._tracks[tid] = _Track(labels[k], masks[k], self._frame)
        self._tracks = {tid: t for tid, t in self._tracks.items() if self._frame - t.last <= self.buffer}
        return out


class Tracked:
    """A ``segment`` function whose instance and panoptic results carry ``track_ids`` (one tracker per source)."""

    def __init__(self, segment: Callable[[Sequence[Frame]], list[SegmentationResult]], *, buffer: int = 30) -> None:
        self.segment = segment
        self.buffer = buffer
        self._trackers: dict[int, SegmentTracker] = {}

    def __call__(self, frames: Sequence[Frame]) -> list[SegmentationResult]:
        out = []
        for result in self.segment(frames):
            if result.segment_map is not None:
                tracker = self._trackers.get(result.frame.source)
                if tracker is None:
                    tracker = self._trackers[result.frame.source] = SegmentTracker(buffer=self.buffer)
                tracks = tracker(result.segment_map, result.segment_info)
                result = dataclasses.replace(result, track_ids=tuple(tracks[int(i)] for i, _, _ in result.segment_info))
            out.append(result)
        return out
