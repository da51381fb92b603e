"""Three threads and two bounded channels, supervised by the caller's thread.

    capture --frames--> inference --results--> render
    (source)            (segmenter)            (renderer + sink)

* ``capture`` owns the source: it iterates it and puts frames into ``frames``.
  The channel's policy is WAIT (lossless) for files and DROP_OLDEST for live
  sources, unless the caller names one; drops are counted.
* ``inference`` owns the segmenter: it takes up to ``batch_size`` frames (on a live
  source it waits at most one frame interval for a batch to fill), runs them and
  puts results into ``results`` (always WAIT: a result is never dropped).
* ``render`` owns the renderer, the exports and the sink: it writes each result to
  the exports (JSON Lines, mask PNGs), draws it, writes it to the sink, and closes
  exports and sink when it ends, whatever the reason.

Stop and errors: :meth:`Pipeline.request_stop` (Ctrl-C, a window's ``q``) sets
the one stop event; capture stops reading and the frames already read flow to
the sink. The first exception in any thread is stored and also sets the stop
event and the abort flag: inference runs no further batch, render writes what
was already inferred and closes the sink, and :meth:`Pipeline.run` re-raises the
error in the caller. Each producer closes its channel from ``finally`` and each
consumer cancels its channel from ``finally``, so no thread waits forever on a
dead neighbour.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .channel import END, Channel
from .config import DropPolicy
from .errors import Stopped
from .exports import Export
from .frames import Frame, SegmentationResult
from .model import Segmenter
from .render import Renderer
from .sinks import Sink
from .sources import Source

log = logging.getLogger(__name__)

_POLL = 0.1  # seconds between checks of the abort flag while waiting
_FPS_WINDOW = 30  # frames over which the drawn frame rate is measured
_LATENCY_WINDOW = 500  # frames over which latency percentiles are taken


@dataclass
class StageTimes:
    """Seconds spent in each stage and how many items it handled (written by that stage's thread only)."""

    seconds: float = 0.0
    items: int = 0

    @property
    def mean_ms(self) -> float:
        return 1000 * self.seconds / self.items if self.items else 0.0


@dataclass
class RunStats:
    frames_read: int = 0
    frames_inferred: int = 0
    frames_written: int = 0
    frames_dropped: int = 0
    batches: int = 0
    wall_seconds: float = 0.0
    completed: bool = False  # the source was read to its end (or to --duration)
    live: bool = False  # the source runs at its own pace (latency is reported for these)
    reconnects: int = 0  # a live stream that failed or ended and came back
    gap_seconds: float = 0.0  # wall-clock time lost to reconnects
    latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=_LATENCY_WINDOW))  # capture -> written
    stages: dict[str, StageTimes] = field(default_factory=lambda: {
        "decode": StageTimes(), "inference": StageTimes(), "render": StageTimes(), "write": StageTimes()})

    @property
    def fps(self) -> float:
        return self.frames_written / self.wall_seconds if self.wall_seconds else 0.0

    def latency_percentiles(self) -> dict[str, float]:
        """Capture-to-written latency over the last frames, in ms: ``{"p50": ..., "p95": ...}`` (0 when none)."""
        values = sorted(self.latency_ms)
        if not values:
            return {"p50": 0.0, "p95": 0.0}
        pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
        return {"p50": pick(0.5), "p95": pick(0.95)}

    def summary(self) -> str:
        stages = ", ".join(f"{name} {st.mean_ms:.1f}" for name, st in self.stages.items())
        gaps = f", reconnects {self.reconnects} ({self.gap_seconds:.1f} s lost)" if self.reconnects else ""
        lat = self.latency_percentiles()
        latency = f"latency p50 {lat['p50']:.0f} ms, p95 {lat['p95']:.0f} ms; " if self.live else ""
        return (f"frames read {self.frames_read}, written {self.frames_written}, dropped {self.frames_dropped}{gaps}; "
                f"{latency}{self.fps:.1f} fps over {self.wall_seconds:.1f} s; mean ms per frame: {stages}")


class Pipeline:
    """Runs one source through one segmenter into one sink. Call :meth:`run` once."""

    def __init__(self, source: Source, segmenter: Segmenter | Callable[[list[Frame]], list[SegmentationResult]],
                 renderer: Renderer | Callable[..., object], sink: Sink, *, batch_size: int = 4,
                 channel_size: int | None = None, drop_policy: DropPolicy | None = None,
                 on_frame: Callable[[RunStats], None] | None = None,
                 on_result: Callable[[SegmentationResult], None] | None = None, exports: Sequence[Export] = (),
                 join_timeout: float = 2.0, duration: float | None = None) -> None:
        self.source, self.sink, self.renderer = source, sink, renderer
        self._segment = segmenter.segment if isinstance(segmenter, Segmenter) else segmenter
        self.batch_size = batch_size
        policy = drop_policy or (DropPolicy.DROP_OLDEST if source.live else DropPolicy.WAIT)
        size = channel_size or max(2, 2 * batch_size)
        self.frames: Channel[Frame] = Channel(size, policy, name="frames")
        self.results: Channel[SegmentationResult] = Channel(size, DropPolicy.WAIT, name="results")
        self.stats = RunStats(live=bool(source.live))
        self.stop_event = threading.Event()
        self._abort = threading.Event()
        self._error: BaseException | None = None
        self._error_lock = threading.Lock()
        self._on_frame = on_frame
        self._on_result = on_result
        self.exports = list(exports)
        self._join_timeout = join_timeout
        self._started: float | None = None
        self._batch_wait = (1.0 / source.fps if source.fps else 0.04) if source.live else None
        self.duration = duration  # seconds of input (by the frames' timestamps) to read; None: all

    # -- control (any thread) ----------------------------------------------------------------
    def request_stop(self) -> None:
        """Graceful: stop reading; what was read is still segmented and written."""
        self.stop_event.set()
        interrupt = getattr(self.source, "interrupt", None)  # e.g. a stream waiting to reconnect
        if interrupt is not None:
            interrupt()

    def abort(self) -> None:
        """Fast: stop reading and inferring; what was already inferred is written, the sink is closed."""
        self.request_stop()
        self._abort.set()

    def snapshot(self) -> dict:
        """Live figures for ``/stats`` (any thread): frames, drops, rate over the run, latency, reconnects."""
        st = self.stats
        elapsed = time.monotonic() - self._started if self._started else 0.0
        return {"source": getattr(self.source, "description", "?"), "frames_read": st.frames_read,
                "frames_written": st.frames_written, "frames_dropped": self.frames.dropped,
                "fps": st.frames_written / elapsed if elapsed > 0 else 0.0,
                "latency_ms": st.latency_percentiles(),
                "reconnects": getattr(self.source, "reconnects", 0),
                "gap_seconds": getattr(self.source, "gap_seconds", 0.0)}

    @property
    def error(self) -> BaseException | None:
        return self._error

    def _fail(self, exc: BaseException) -> None:
        with self._error_lock:
            if self._error is None:
                self._error = exc
        self.abort()

    # -- the threads ------------------------------------------------------------------------
    def _capture(self) -> None:
        st = self.stats.stages["decode"]
        first: float | None = None  # the first frame's time, for --duration
        try:
            it = iter(self.source)
            while not self.stop_event.is_set():
                t0 = time.perf_counter()
                try:
                    frame = next(it)
                except StopIteration:
                    self.stats.completed = True
                    break
                st.seconds += time.perf_counter() - t0
                if self.duration is not None:
                    t = frame.seconds if frame.seconds is not None else frame.index / (self.source.fps or 25.0)
                    first = t if first is None else first
                    if t - first >= self.duration:
                        self.stats.completed = True  # all that was asked for was read
                        break
                st.items += 1
                self.stats.frames_read += 1
                self.frames.put(frame)
        except Stopped:
            pass
        finally:
            self.frames.close()

    def _next_batch(self) -> list[Frame] | None:
        """Up to ``batch_size`` frames; ``None`` at end of stream or on abort."""
        while True:
            if self._abort.is_set():
                return None
            try:
                item = self.frames.get(timeout=_POLL)
                break
            except TimeoutError:
                continue
        if item is END:
            return None
        batch = [item]
        deadline = None if self._batch_wait is None else time.monotonic() + self._batch_wait
        while len(batch) < self.batch_size and not self._abort.is_set():
            wait = _POLL if deadline is None else deadline - time.monotonic()
            if wait <= 0:
                break
            try:
                item = self.frames.get(timeout=min(wait, _POLL))
            except TimeoutError:
                continue
            if item is END:  # the next get() returns END again
                break
            batch.append(item)
        return batch

    def _infer(self) -> None:
        st = self.stats.stages["inference"]
        try:
            while (batch := self._next_batch()) is not None:
                t0 = time.perf_counter()
                results = self._segment(batch)
                st.seconds += time.perf_counter() - t0
                st.items += len(batch)
                self.stats.batches += 1
                self.stats.frames_inferred += len(batch)
                for r in results:
                    self.results.put(r)
        except Stopped:
            pass
        finally:
            self.frames.cancel()
            self.results.close()

    def _render(self) -> None:
        render_t, write_t = self.stats.stages["render"], self.stats.stages["write"]
        recent: deque[float] = deque(maxlen=_FPS_WINDOW)  # when the last frames were drawn, for --show-fps
        try:
            while True:
                try:
                    item = self.results.get(timeout=_POLL)
                except TimeoutError:
                    continue
                if item is END:
                    break
                if self._on_result is not None:
                    self._on_result(item)
                for export in self.exports:
                    export.write(item)
                t0 = time.perf_counter()
                recent.append(t0)
                fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else None
                image = self.renderer(item, fps=fps)
                t1 = time.perf_counter()
                self.sink.write(item.frame.with_image(image))
                t2 = time.perf_counter()
                render_t.seconds += t1 - t0
                render_t.items += 1
                write_t.seconds += t2 - t1
                write_t.items += 1
                self.stats.frames_written += 1
                self.stats.latency_ms.append(1000 * (time.monotonic() - item.frame.captured))
                if self._on_frame is not None:
                    self._on_frame(self.stats)
            if self.stats.completed and not self._abort.is_set():
                self.sink.finish()
        finally:
            self.results.cancel()
            try:
                for export in self.exports:
                    export.close()
            finally:
                self.sink.close()

    # -- supervision (the caller's thread) ----------------------------------------------------------
    def run(self) -> RunStats:
        """Run to the end of the source, a stop, or the first error; re-raise that error here.

        A ``KeyboardInterrupt`` in the caller's thread requests a graceful stop; a
        second one aborts. Either way the sink is closed before this returns.
        """
        t_start = self._started = time.monotonic()
        done = {name: threading.Event() for name in ("capture", "inference", "render")}
        threads = {name: threading.Thread(target=self._guard, args=(fn, done[name]), name=f"streamseg-{name}",
                                          daemon=True)
                   for name, fn in (("capture", self._capture), ("inference", self._infer), ("render", self._render))}
        for t in threads.values():
            t.start()
        # Wait on an Event, not Thread.join(): on Python 3.11 a KeyboardInterrupt inside join()
        # can mark a running thread as finished, and the process would exit before the sink closes.
        while not done["render"].is_set():
            if (self.duration is not None and self.source.live and not self.stop_event.is_set()
                    and time.monotonic() - t_start > self.duration + 5.0):  # a live source stalled past --duration
                log.warning("--duration reached while the source delivered nothing; stopping")
                self.request_stop()
            try:
                done["render"].wait(_POLL)
            except KeyboardInterrupt:
                if self.stop_event.is_set():
                    log.warning("second interrupt: stopping now")
                    self.abort()
                else:
                    log.warning("interrupted: finishing the frames in flight (interrupt again to stop now)")
                    self.request_stop()
        # The sink is closed. Upstream threads end on their own (their channels are
        # cancelled); do not wait long for one stuck in a blocking read.
        deadline = time.monotonic() + self._join_timeout
        for name in ("render", "inference", "capture"):
            done[name].wait(max(0.0, deadline - time.monotonic()))
        for name, t in threads.items():
            if not done[name].is_set():
                log.warning("%s thread still busy after the stop; leaving it behind", name)
        self.stats.frames_dropped = self.frames.dropped
        self.stats.reconnects = getattr(self.source, "reconnects", 0)
        self.stats.gap_seconds = getattr(self.source, "gap_seconds", 0.0)
        self.stats.wall_seconds = time.monotonic() - t_start
        if self._error is not None:
            raise self._error
        return self.stats

    def _guard(self, fn: Callable[[], None], done: threading.Event) -> None:
        try:
            fn()
        except BaseException as exc:  # every error reaches the caller through run()
            self._fail(exc)
        finally:
            done.set()
