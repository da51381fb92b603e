"""Which frames the model runs on: every frame, or every Nth frame of each source (``--infer-every N``).

:class:`EveryNth` wraps a segment function. It runs the model on the first frame of each source
and every Nth after it; the frames between get the labels of the last frame segmented (their
own picture, its label map), so every frame is still drawn and written. A frame of another size
than the last one segmented (a folder of different images) is always segmented. Stateful: the
inference thread calls it, batch after batch, in order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from streamseg.frames import Frame, SegmentationResult
from streamseg.roles import SegmentFn


class EveryNth:
    def __init__(self, segment: SegmentFn, n: int) -> None:
        if n < 1:
            raise ValueError(f"n must be 1 or more, got {n}")
        self.segment, self.n = segment, n
        self.frames_segmented = 0  # what the model was given
        self._seen: dict[int, int] = {}  # source -> frames seen
        self._shape: dict[int, tuple[int, ...]] = {}  # source -> the picture size last segmented
        self._last: dict[int, SegmentationResult] = {}  # source -> the last result the model gave

    def __call__(self, frames: Sequence[Frame]) -> list[SegmentationResult]:
        picked = []
        for frame in frames:
            k = self._seen.get(frame.source, 0)
            self._seen[frame.source] = k + 1
            if k % self.n == 0 or self._shape.get(frame.source) != frame.image.shape:
                picked.append(frame)
                self._shape[frame.source] = frame.image.shape
        results = iter(self.segment(picked) if picked else ())
        self.frames_segmented += len(picked)
        chosen = {id(f) for f in picked}
        out = []
        for frame in frames:
            if id(frame) in chosen:
                result = next(results)
                self._last[frame.source] = result
            else:
                result = dataclasses.replace(self._last[frame.source], frame=frame)
            out.append(result)
        return out
