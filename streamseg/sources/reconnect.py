"""A live network stream that comes back after it fails or ends."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from fractions import Fraction

from streamseg.errors import SourceError, redact
from streamseg.frames import Frame
from streamseg.roles import Source, SourceBase

from .video import VideoSource

log = logging.getLogger(__name__)


class ReconnectingSource(SourceBase):
    """A live network stream that comes back: reopened with exponential backoff when it fails or ends.

    Timestamps follow the wall clock (milliseconds since the first frame), so a recording
    lasts as long as it ran, whatever was dropped or lost to a reconnect; within one
    connection the stream's own timestamps keep the spacing of its frames. No frame is
    invented for a gap. ``attempts``: reconnects allowed in a row (``None``: no limit;
    0: the first end is the end). Gaps are counted in ``reconnects`` and ``gap_seconds``.
    :meth:`interrupt` (any thread) ends a wait for the stream at once.
    """

    live = True

    def __init__(self, spec: str, *, timeout: float = 10.0, attempts: int | None = None, max_delay: float = 30.0,
                 first_delay: float = 0.5, opener: Callable[[], Source] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self.description = redact(spec)  # never the password or token of the URL
        self._open = opener or (lambda: VideoSource(spec, live=True, timeout=timeout))
        self._attempts, self._max_delay, self._first_delay = attempts, max_delay, first_delay
        self._clock = clock
        self._interrupted = threading.Event()
        self._current: Source | None = self._open()  # the first connection must work: a typo fails at once
        self.fps = self._current.fps
        self.reconnects = 0
        self.gap_seconds = 0.0
        self._damaged_before = 0  # damaged packets of earlier connections
        self.last_error: SourceError | None = None  # why the last connection or attempt failed
        self._closed = False

    def interrupt(self) -> None:
        self._interrupted.set()

    @property
    def connected(self) -> bool:
        """Whether a connection is open now (false while reconnecting)."""
        return self._current is not None

    @property
    def damaged_packets(self) -> int:
        return self._damaged_before + getattr(self._current, "damaged_packets", 0)

    def _reconnect(self) -> Source | None:
        """A new connection, or ``None`` when interrupted or out of attempts (then the last error is raised)."""
        failures = 0
        delay = self._first_delay
        while not self._interrupted.is_set():
            if self._attempts is not None and failures >= self._attempts:
                return None
            log.warning("%s: reconnecting in %.1f s (attempt %d%s)", self.description, delay, failures + 1,
                        "" if self._attempts is None else f" of {self._attempts}")
            if self._interrupted.wait(delay):
                return None
            try:
                return self._open()
            except SourceError as exc:
                failures += 1
                self.last_error = exc
                log.warning("%s", exc)
                delay = min(self._max_delay, delay * 2)
        return None

    def __iter__(self) -> Iterator[Frame]:
        tb = Fraction(1, 1000)
        start: float | None = None
        last_ms = -1
        index = 0
        while self._current is not None:
            offset: float | None = None  # wall-clock second of this connection's stream time 0
            try:
                for f in self._current:
                    now = self._clock()
                    start = now if start is None else start
                    t = float(f.pts * f.time_base) if f.pts is not None and f.time_base else now - start
                    if offset is None or abs(offset + t - now) > 1.0:  # (re)align with the wall clock
                        offset = now - t
                    ms = max(last_ms + 1, round((offset + t - start) * 1000))
                    last_ms = ms
                    yield Frame(index=index, image=f.image, pts=ms, time_base=tb, captured=f.captured)
                    index += 1
                    if self._interrupted.is_set():
                        return
                log.warning("%s: the stream ended", self.description)
            except SourceError as exc:
                self.last_error = exc
                log.warning("%s", exc)
            lost_at = self._clock()
            self._damaged_before += getattr(self._current, "damaged_packets", 0)
            self._current.close()
            self._current = None
            if self._interrupted.is_set():
                return
            self._current = self._reconnect()
            if self._current is None:
                if self._interrupted.is_set() or self.last_error is None:
                    return
                if self._attempts:
                    raise SourceError(f"{self.last_error} (gave up after {self._attempts} reconnect attempts)")
                raise self.last_error
            self.reconnects += 1
            self.gap_seconds += self._clock() - lost_at
            log.warning("%s: reconnected after %.1f s (reconnect %d)", self.description, self._clock() - lost_at,
                        self.reconnects)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._interrupted.set()
            if self._current is not None:
                self._current.close()
