"""The roles a run is built from, as small Protocols: what the pipeline needs of each, nothing more.

* a :class:`Source` yields :class:`~streamseg.frames.Frame` objects (iterated by one capture thread);
* a segment function turns a batch of frames into one :class:`~streamseg.frames.SegmentationResult`
  each (called by the inference thread only);
* a draw function turns a result into a picture (called by the render thread only);
* a :class:`Sink` takes drawn frames and an :class:`Export` takes results (render thread).

Sources, sinks and exports are created in the caller's thread, so that a bad path fails
before any worker starts; each has an idempotent ``close()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from .closing import Closing
from .frames import Frame, SegmentationResult

SegmentFn = Callable[[Sequence[Frame]], list[SegmentationResult]]
"""A batch of frames in, one result per frame out, in order (the model, or a stand-in)."""

DrawFn = Callable[..., np.ndarray]
"""``draw(result, fps=None) -> RGB uint8 picture`` (a :class:`~streamseg.render.renderer.Renderer`)."""


@runtime_checkable
class Source(Protocol):
    """Yields frames in order. ``live`` sources run at their own pace and may drop frames."""

    live: bool
    fps: float | None
    expected_frames: int | None
    audio_path: str | None
    description: str

    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...


@runtime_checkable
class Sink(Protocol):
    """Takes annotated frames. ``finish()`` is called before ``close()`` only when the input was read to its end."""

    def write(self, frame: Frame) -> None: ...

    def finish(self) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Export(Protocol):
    """Takes segmentation results (JSON records, mask images...)."""

    def write(self, result: SegmentationResult) -> None: ...

    def close(self) -> None: ...


class SinkBase(Closing):
    """A context manager whose ``finish()`` does nothing: most sinks need no end-of-input step.

    ``written`` lists the files a sink has written so far (none for windows and the like).
    """

    def finish(self) -> None:
        """The source was read to its end."""

    @property
    def written(self) -> list[Path]:
        return []
