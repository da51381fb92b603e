"""What the live view shows: the newest JPEG of each source, and how a request names a source.

:class:`LiveFrames` is the sink the render thread writes: it encodes each frame to JPEG once, and every viewer's
connection thread takes the newest JPEG it has not sent yet and skips the rest, so slow or many viewers never
hold up the pipeline. A fleet's dashboard has its own :class:`Pictures` (frames relayed from its workers).
"""

from __future__ import annotations

import threading
from typing import Protocol

import cv2

from streamseg.frames import Frame
from streamseg.roles import SinkBase


class Pictures(Protocol):
    """The pictures a live view serves, one stream per source. Viewer threads call every method."""

    def source_keys(self) -> list[str]: ...  # what ``?source=`` takes, one per source, in the page's order

    def resolve_source(self, text: str | None) -> object | None: ...  # none: the first; None: no such source

    def next_jpeg(self, after: int, timeout: float = 1.0, source=None) -> tuple[int, bytes | None]: ...

    def latest_jpeg(self, source=None, timeout: float = 5.0) -> bytes | None: ...

    def wake(self) -> None: ...  # the server is closing: end every wait now


class LiveFrames(SinkBase):
    """A sink that keeps each source's newest frame as a JPEG (written by the render thread, read by viewers)."""

    def __init__(self, *, sources: int = 1, quality: int = 80) -> None:
        self.sources = sources  # a multi-source run: one stream per source (?source=N)
        self._quality = quality
        self._cond = threading.Condition()
        self._jpeg: dict[int, bytes] = {}
        self._seqs: dict[int, int] = {}
        self._closing = False
        self.frames_encoded = 0

    def write(self, frame: Frame) -> None:
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, self._quality])
        if not ok:  # pragma: no cover - OpenCV encodes any uint8 picture
            return
        with self._cond:
            self._jpeg[frame.source] = buf.tobytes()
            self._seqs[frame.source] = self._seqs.get(frame.source, 0) + 1
            self.frames_encoded += 1
            self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    def close(self) -> None:
        self.wake()

    def next_jpeg(self, after: int, timeout: float = 1.0, source: int = 0) -> tuple[int, bytes | None]:
        """Source ``source``'s newest JPEG after sequence number ``after`` (waits up to ``timeout``);
        ``(after, None)`` if none came."""
        with self._cond:
            self._cond.wait_for(lambda: self._seqs.get(source, 0) > after or self._closing, timeout=timeout)
            seq = self._seqs.get(source, 0)
            if self._closing or seq <= after:
                return after, None
            return seq, self._jpeg[source]

    def latest_jpeg(self, source: int = 0, timeout: float = 5.0) -> bytes | None:
        """Source ``source``'s newest JPEG, waiting up to ``timeout`` for the first one."""
        with self._cond:
            self._cond.wait_for(lambda: source in self._jpeg or self._closing, timeout=timeout)
            return self._jpeg.get(source)

    def source_keys(self) -> list[str]:
        """Here the route index."""
        return [str(i) for i in range(self.sources)]

    def resolve_source(self, text: str | None) -> int | None:
        try:
            index = int(text) if text is not None else 0
        except ValueError:
            return None
        return index if 0 <= index < self.sources else None
