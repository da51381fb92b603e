"""Stand-ins shared by the tests: sources, sinks and a model that exist only in memory.

They implement the roles in :mod:`streamseg.roles` and nothing more; each says what it stands in for.
"""

from __future__ import annotations

import time
from fractions import Fraction

import numpy as np

from streamseg.config import RenderConfig
from streamseg.errors import SourceError
from streamseg.frames import Frame, SegmentationResult
from streamseg.pipeline.pipeline import Pipeline, Route
from streamseg.render.renderer import Renderer
from streamseg.roles import SinkBase, SourceBase


class ListSource(SourceBase):
    """Frames from memory; ``live`` ones arrive every ``interval`` seconds; may fail at a given index."""

    def __init__(self, n, *, live=False, interval=0.0, fail_at=None, fps=25.0):
        self.n, self.live, self.interval, self.fail_at, self.fps = n, live, interval, fail_at, fps
        self.expected_frames = n
        self.description = "list"
        self.closed = False

    def __iter__(self):
        for i in range(self.n):
            if i == self.fail_at:
                raise SourceError(f"source broke at {i}")
            if self.interval:
                time.sleep(self.interval)
            yield Frame(index=i, image=np.full((8, 12, 3), i % 256, np.uint8), pts=i, time_base=Fraction(1, 25))

    def close(self):
        self.closed = True


class RecordingSink(SinkBase):
    def __init__(self, delay=0.0, fail_at=None):
        self.frames, self.delay, self.fail_at = [], delay, fail_at
        self.finished = False
        self.close_calls = 0

    def write(self, frame):
        if frame.index == self.fail_at:
            raise OSError("disk on fire")
        time.sleep(self.delay)
        self.frames.append(frame)

    def finish(self):
        self.finished = True

    def close(self):
        self.close_calls += 1


def mean_segmenter(delay=0.0, fail_at=None):
    """Labels each frame with its mean grey level mod 3: a stand-in model for pipeline mechanics."""
    calls = []

    def segment(frames):
        calls.append(len(frames))
        if fail_at is not None and any(f.index >= fail_at for f in frames):
            raise RuntimeError("model exploded")
        time.sleep(delay)
        return [SegmentationResult(frame=f, label_map=np.full(f.image.shape[:2], int(f.image.mean()) % 3, np.uint8))
                for f in frames]

    segment.calls = calls
    return segment


def renderer():
    return Renderer(RenderConfig(alpha=0.5), {0: "a", 1: "b", 2: "c"}, 3)


def one_route(source, segment, sink, *, draw=None, exports=(), **kwargs) -> Pipeline:
    """A pipeline with a single route (one source into one sink), as a single-file run has."""
    return Pipeline([Route(source, draw or renderer(), sink, list(exports))], segment, **kwargs)


class FakeCapture:
    """Stands in for cv2.VideoCapture: no webcam exists on a build machine."""

    def __init__(self, index, frames=5, opened=True):
        self.left, self.opened, self.released = frames, opened, False

    def isOpened(self):
        return self.opened

    def get(self, prop):
        return 30.0

    def read(self):
        if self.left == 0:
            return False, None
        self.left -= 1
        time.sleep(0.01)
        bgr = np.zeros((6, 4, 3), np.uint8)
        bgr[..., 0] = 255  # blue in BGR
        return True, bgr

    def release(self):
        self.released = True
