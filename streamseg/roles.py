"""The roles a run is built from, as small Protocols: what the pipeline needs of each, nothing more.

* a :class:`Source` yields :class:`~streamseg.frames.Frame` objects (iterated by one capture thread);
* a segment function turns a batch of frames into one :class:`~streamseg.frames.SegmentationResult`
  each (called by the inference thread only);
* a draw function turns a result into a picture (called by the render thread only);
* a :class:`Sink` takes drawn frames and an :class:`Export` takes results (render thread);
* a :class:`PromptControl` or :class:`PointControl` takes what a live view sends to the model (any thread).

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
    description: str  # for messages, logs and pages: no password or token
    reconnects: int  # times a live stream came back
    gap_seconds: float  # seconds lost to those gaps
    damaged_packets: int  # packets the decoder could not use and skipped
    connected: bool  # False while a live stream waits to come back

    def __iter__(self) -> Iterator[Frame]: ...

    def interrupt(self) -> None: ...

    def close(self) -> None: ...


class SourceBase(Closing):
    """The figures of a source that never reconnects and skips nothing, and an ``interrupt()`` that has nothing
    to interrupt (a source blocked in a wait overrides it)."""

    audio_path: str | None = None
    expected_frames: int | None = None
    reconnects = 0
    gap_seconds = 0.0
    damaged_packets = 0
    jumps = 0  # times the source's timestamps went back or leapt ahead (and were carried on evenly)
    connected = True

    def interrupt(self) -> None:
        """End a wait for the source at once (any thread); nothing waits here."""


@runtime_checkable
class Sink(Protocol):
    """Takes annotated frames. ``finish()`` is called before ``close()`` only when the input was read to its end."""

    written: list[Path]  # the files written so far (a sink that writes files also has their ``path``)
    bytes_written: int  # bytes written to files and streams so far
    publish_reconnects: int  # times a published stream's server was reconnected
    publish_failures: int  # times a published stream's connection failed, ended or stalled

    def write(self, frame: Frame) -> None: ...

    def finish(self) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Export(Protocol):
    """Takes segmentation results (JSON records, mask images...)."""

    path: Path  # the file, or the folder of files, it writes
    written: list[Path]  # the files written so far

    def write(self, result: SegmentationResult) -> None: ...

    def close(self) -> None: ...


class PromptControl(Protocol):
    """Text prompts a live view may read and replace (a model that takes text). Thread-safe."""

    prompts: tuple[str, ...]  # the prompts in use
    changes: int  # how many times they were replaced

    def set_prompts(self, text: str | Sequence[str]) -> tuple[str, ...]: ...


class PointControl(Protocol):
    """Objects a live view may add or remove by a point on a source's frame (a model that tracks what it is
    shown). Thread-safe: the click applies before that source's next frame."""

    def add_point(self, x: float, y: float, source: int = 0) -> None: ...

    def remove_point(self, x: float, y: float, source: int = 0) -> None: ...


class SinkBase(Closing):
    """A context manager whose ``finish()`` does nothing: most sinks need no end-of-input step.

    ``written`` lists the files a sink has written so far (none for windows and the like).
    """

    bytes_written = 0
    publish_reconnects = 0
    publish_failures = 0

    def finish(self) -> None:
        """The source was read to its end."""

    @property
    def written(self) -> list[Path]:
        return []
