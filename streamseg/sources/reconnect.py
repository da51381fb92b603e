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

JUMP_SLACK = 2.0  # seconds the stream's clock may run ahead of the wall clock between two frames (a burst) before
# it counts as a jump


class ReconnectingSource(SourceBase):
    """A live network stream that comes back: reopened with exponential backoff when it fails or ends.

    Timestamps are milliseconds since the first frame. Within one connection they keep the stream's own
    spacing (frames that arrive in a burst after a stall stay as far apart as the camera sent them). A new
    connection, and a jump of the stream's clock (an encoder restart, the MPEG-TS wrap: back, or forward by
    more than the wall clock moved), goes on as long after the frame before as really passed on the wall
    clock, so an outage is a gap of its length. Always increasing. No frame is invented for a gap.
    ``jumps`` counts the clock jumps. ``attempts``: reconnects allowed in a row (``None``: no limit;
    0: the first end is the end). Gaps are counted in ``reconnects`` and ``gap_seconds``.
    :meth:`interrupt` (any thread) ends a wait for the stream at once.

    The first connection must work (a typo fails at once), unless ``resume``: a stream that delivered frames
    before (a fleet source moved to another worker, or restarted with its worker) starts down if it is down,
    and is reconnected with the backoff like any stream that went away; that wait counts as a reconnect.
    """

    live = True

    def __init__(self, spec: str, *, timeout: float = 10.0, attempts: int | None = None, max_delay: float = 30.0,
                 first_delay: float = 0.5, opener: Callable[[], Source] | None = None,
                 clock: Callable[[], float] = time.monotonic, resume: bool = False) -> None:
        self.spec = spec
        self.description = redact(spec)  # never the password or token of the URL
        self._open = opener or (lambda: VideoSource(spec, live=True, timeout=timeout))
        self._attempts, self._max_delay, self._first_delay = attempts, max_delay, first_delay
        self._clock = clock
        self._interrupted = threading.Event()
        self.last_error: SourceError | None = None  # why the last connection or attempt failed
        try:
            self._current: Source | None = self._open()
        except SourceError as exc:
            if not resume:
                raise
            self._current, self.last_error = None, exc
            log.warning("%s (it worked before: reconnecting with the backoff)", exc)
        self.fps = self._current.fps if self._current is not None else None
        self.reconnects = 0
        self.gap_seconds = 0.0
        self.jumps = 0  # times the stream's timestamps jumped within a connection
        self._damaged_before = 0  # damaged packets of earlier connections
        self._closed = False

    @property
    def frame_size(self) -> tuple[int, int] | None:
        """(height, width) of the current connection's pictures (``None``: down, or not known)."""
        return getattr(self._current, "frame_size", None)

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
        last_ms, spacing = -1, round(1000 / (self.fps or 25.0))  # spacing: ms between the stream's frames
        last_read: float | None = None  # wall clock when the frame before was read
        index = 0
        if self._current is None and not self._come_back(self._clock()):  # resumed while the stream is down
            return
        while self._current is not None:
            anchor: tuple[int, float] | None = None  # (ms, stream time) of the frame this connection's times count from
            before: float | None = None  # stream time of the frame before, in this connection
            try:
                for f in self._current:
                    now = self._clock()
                    t = float(f.pts * f.time_base) if f.pts is not None and f.time_base else None
                    if t is None:  # no timestamps: the wall clock
                        t = now
                    elif before is not None and (t < before or t - before > now - last_read + JUMP_SLACK):
                        self.jumps += 1  # the stream's clock went back or leapt ahead: go on from the wall clock
                        log.warning("%s: the stream's timestamps jumped by %+.3f s; going on from the wall clock",
                                    self.description, t - before)
                        anchor = None
                    elif before is not None and t > before:
                        spacing = max(1, round((t - before) * 1000))  # the stream's own spacing
                    if anchor is None:  # a new connection, or a jump: as long after the frame before as really passed
                        ms = 0 if last_read is None else last_ms + max(spacing, round((now - last_read) * 1000))
                        anchor = (ms, t)
                    ms = anchor[0] + round((t - anchor[1]) * 1000)
                    if ms <= last_ms:
                        ms = last_ms + 1  # never back (two frames with one timestamp)
                    last_ms, before, last_read = ms, t, now
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
            if self._interrupted.is_set() or not self._come_back(lost_at):
                return

    def _come_back(self, lost_at: float) -> bool:
        """Reconnect after the stream was lost at ``lost_at``: ``False`` when interrupted; raises the last error
        when out of attempts."""
        self._current = self._reconnect()
        if self._current is None:
            if self._interrupted.is_set() or self.last_error is None:
                return False
            if self._attempts:
                raise SourceError(f"{self.last_error} (gave up after {self._attempts} reconnect attempts)")
            raise self.last_error
        self.reconnects += 1
        self.gap_seconds += self._clock() - lost_at
        self.fps = self.fps or self._current.fps
        log.warning("%s: reconnected after %.1f s (reconnect %d)", self.description, self._clock() - lost_at,
                    self.reconnects)
        return True

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._interrupted.set()
            if self._current is not None:
                self._current.close()
