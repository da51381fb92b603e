"""Capture threads, one inference thread, one render thread and bounded channels, supervised by the caller.

    capture[i] --frames[i]--> inference --results--> render --> exports[i], sink[i]
    (source i)               (segment)              (draw[i])

A run has one or more *routes* (source -> draw, exports, sink); a single file or camera is
one route. Frames of all routes are batched together into one call of ``segment`` and
each result goes back to its own route.

* ``capture[i]`` owns source i: it iterates it and puts frames into ``frames[i]``.
  The channel's policy is WAIT (lossless) for files and DROP_OLDEST for live
  sources, unless the caller names one; drops are counted per source.
* ``inference`` owns ``segment`` (the model): it takes up to ``batch_size`` frames,
  round-robin over the sources (on live sources it waits at most one frame interval
  for a batch to fill), runs them and puts results into ``results`` (always WAIT).
* ``render`` owns the draw functions, the exports and the sinks: it writes each result
  to its route's exports, draws it, writes it to the route's sink, and closes every
  export and sink when it ends, whatever the reason.

Live sources keep latency bounded by design. Their channel holds no more than the batch being
formed: the freshest frames, everything older dropped and counted. Their batch size adapts,
starting at 1: it grows (up to ``batch_size``) only while the capture-to-output latency of the
frames written, scaled to one more frame per batch, stays under 80% of ``max_latency``, the
model falls behind the sources, and the larger batch takes at most 90% of the smaller one's time
per frame (batching that does not pay only adds latency); it halves when the latency goes over
the limit (:mod:`streamseg.pipeline.live_batch`). Files keep the fixed ``batch_size`` and lose
nothing.

Stop and errors: :meth:`Pipeline.request_stop` (Ctrl-C, a window's ``q``) sets the one
stop event; capture stops reading and the frames already read flow to the sinks. A
source that fails ends its own route: its error is kept in ``route.error``, its channel
closes, the frames it gave are still segmented and written, and the other routes go on.
Any other exception (model, drawing, a sink) is stored, sets the stop event and the abort
flag: inference runs no further batch, render writes what was already inferred and closes
the sinks. :meth:`Pipeline.run` re-raises that error in the caller, or the first route's
error when every route failed. Each producer closes its channel from ``finally`` and each
consumer cancels its channel from ``finally``, so no thread waits forever on a dead neighbour.

This module knows the roles (:mod:`streamseg.roles`), not the model, renderer or sinks behind them.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from streamseg.closing import close_all
from streamseg.config import DropPolicy
from streamseg.errors import Stopped, redact
from streamseg.frames import Frame, SegmentationResult
from streamseg.roles import DrawFn, Export, SegmentFn, Sink, Source

from .channel import END, Channel
from .live_batch import LiveBatch
from .stats import RunStats, Snapshot, SourceFigures, source_figures
from .steady import SteadySize

log = logging.getLogger(__name__)

_POLL = 0.1  # seconds between checks of the abort flag while waiting
_FPS_WINDOW = 30  # frames over which the drawn frame rate is measured


@dataclass
class Route:
    """One source and where its results go. ``stats`` and ``error`` are filled in while running."""

    source: Source
    renderer: DrawFn
    sink: Sink
    exports: Sequence[Export] = ()
    stats: RunStats = field(default_factory=RunStats)
    error: BaseException | None = None


class Pipeline:
    """Runs the routes' sources through one ``segment`` function into their sinks. Call :meth:`run` once."""

    def __init__(self, routes: Sequence[Route], segment: SegmentFn, *, batch_size: int = 4,
                 channel_size: int | None = None, drop_policy: DropPolicy | None = None,
                 duration: float | None = None, on_frame: Callable[[RunStats], None] | None = None,
                 on_result: Callable[[SegmentationResult], None] | None = None, join_timeout: float = 2.0,
                 max_latency: float = 1.0) -> None:
        if not routes:
            raise ValueError("a pipeline needs at least one route")
        self.routes = list(routes)
        self._segment = segment
        self.batch_size = batch_size
        size = channel_size or max(2, 2 * batch_size)
        self._arrived = threading.Event()  # some frames channel got an item (or closed)
        self.live = any(r.source.live for r in self.routes)
        self.max_latency = max_latency
        arrivals = sum(r.source.fps or 25.0 for r in self.routes if r.source.live)
        self._live_batch = LiveBatch(batch_size, max_latency, arrivals)  # live: frames per batch, adapted
        self.channels: list[Channel[Frame]] = []
        for i, route in enumerate(self.routes):
            route.stats.live = bool(route.source.live)
            policy = drop_policy or (DropPolicy.DROP_OLDEST if route.source.live else DropPolicy.WAIT)
            capacity = self.live_batch if route.source.live and policy is DropPolicy.DROP_OLDEST else size
            self.channels.append(Channel(capacity, policy, name=f"frames[{i}]", on_put=self._arrived.set))
        self.results: Channel[SegmentationResult] = Channel(max(size, len(self.routes)), DropPolicy.WAIT,
                                                            name="results")
        self.stats = RunStats()  # the whole run; filled in by run()
        self._batches = 0  # forwards run (the inference thread's count)
        self.stop_event = threading.Event()
        self._abort = threading.Event()
        self._error: BaseException | None = None
        self._route_errors: list[BaseException] = []  # in the order they happened
        self._error_lock = threading.Lock()
        self._on_frame = on_frame
        self._on_result = on_result
        self._join_timeout = join_timeout
        self._started: float | None = None
        live_fps = [r.source.fps or 25.0 for r in self.routes if r.source.live]
        self._batch_wait = 1.0 / max(live_fps) if live_fps else None  # live: at most one frame interval
        self.duration = duration  # seconds of input (by the frames' timestamps) to read; None: all

    # -- control (any thread) ----------------------------------------------------------------
    def request_stop(self) -> None:
        """Graceful: stop reading; what was read is still segmented and written."""
        self.stop_event.set()
        for route in self.routes:
            route.source.interrupt()  # e.g. a stream waiting to reconnect

    def abort(self) -> None:
        """Fast: stop reading and inferring; what was already inferred is written, the sinks are closed."""
        self.request_stop()
        self._abort.set()

    def snapshot(self) -> Snapshot:
        """Live figures for ``/stats`` and ``/metrics`` (any thread): one entry per source, and the batch."""
        return Snapshot([self._route_snapshot(i) for i in range(len(self.routes))], batches=self._batches,
                        batch_size=self.live_batch if self.live else self.batch_size)

    def _route_snapshot(self, i: int) -> SourceFigures:
        route, channel = self.routes[i], self.channels[i]
        elapsed = time.monotonic() - self._started if self._started else 0.0
        return source_figures(route.stats, route.source, channel_depth=len(channel), dropped=channel.dropped,
                              bytes_written=route.sink.bytes_written, elapsed=elapsed,
                              publish_reconnects=route.sink.publish_reconnects,
                              publish_failures=route.sink.publish_failures,
                              error=None if route.error is None else redact(str(route.error)))

    @property
    def error(self) -> BaseException | None:
        return self._error

    def _fail(self, exc: BaseException) -> None:
        with self._error_lock:
            if self._error is None:
                self._error = exc
        self.abort()

    # -- the threads ------------------------------------------------------------------------
    def _capture(self, i: int) -> None:
        route, channel = self.routes[i], self.channels[i]
        stats, source = route.stats, route.source
        st = stats.stages["decode"]
        first: float | None = None  # the first frame's time, for --duration
        steady = SteadySize(source.description)  # every frame at the first one's size
        try:
            it = iter(source)
            while not self.stop_event.is_set():
                t0 = time.perf_counter()
                try:
                    frame = next(it)
                except StopIteration:
                    stats.completed = True
                    break
                st.seconds += time.perf_counter() - t0
                stats.last_read = time.monotonic()
                if self.duration is not None:
                    # a live source: the wall clock from its first frame read (what it sent while the run was getting
                    # ready comes first, in a burst, and is not "later"); a file: its own time
                    t = time.monotonic() if source.live else frame.time(source.fps)
                    first = t if first is None else first
                    if t - first >= self.duration:
                        stats.completed = True  # all that was asked for was read
                        break
                st.items += 1
                stats.frames_read += 1
                if frame.name is None:  # stills of a folder keep each picture's own size
                    frame = steady(frame)
                    stats.size_changes = steady.changes
                channel.put(frame if frame.source == i else dataclasses.replace(frame, source=i))
        except Stopped:
            pass
        except Exception as exc:  # a dead source ends its own route only
            with self._error_lock:
                route.error = exc
                self._route_errors.append(exc)
                others = sum(1 for r in self.routes if r.error is None)
            if others:  # with no other route left, run() raises it: nothing to log
                log.error("%s: %s (the other sources go on)", source.description, exc)
        finally:
            channel.close()

    def _next_batch(self) -> list[Frame] | None:
        """Up to ``batch_size`` frames (live: the adaptive live batch), round-robin over the sources; ``None``
        when all have ended, or on abort."""
        batch: list[Frame] = []
        deadline = None
        limit = self.live_batch if self.live else self.batch_size
        while len(batch) < limit and not self._abort.is_set():
            self._arrived.clear()
            took = False
            open_channels = 0
            for i in self._order():
                if self._ended[i]:
                    continue
                try:
                    item = self.channels[i].get(timeout=0)
                except TimeoutError:
                    open_channels += 1
                    continue
                if item is END:
                    self._ended[i] = True
                    continue
                open_channels += 1
                batch.append(item)
                took = True
                if len(batch) >= limit:
                    break
            if batch and deadline is None:
                deadline = None if self._batch_wait is None else time.monotonic() + self._batch_wait
            if not open_channels:
                break
            if took:
                continue
            wait = _POLL if deadline is None else min(_POLL, deadline - time.monotonic())
            if batch and wait <= 0:
                break
            self._arrived.wait(max(wait, 0.0))
        return batch if batch and not self._abort.is_set() else None  # abort: no further batch

    @property
    def live_batch(self) -> int:
        """Frames per batch of live sources now (see :mod:`streamseg.pipeline.live_batch`)."""
        return self._live_batch.size

    @property
    def live_batches(self) -> list[int]:
        """Every change of the live batch size, in order."""
        return self._live_batch.history

    def _adapt_live_batch(self) -> None:
        """After a live batch: the size for the next ones, from the latency of the frames last written."""
        recent = [lat for r in self.routes if r.source.live for lat in list(r.stats.latency_ms)[-self.live_batch:]]
        size = self._live_batch.adapt(max(recent) / 1000 if recent else None)
        if size is not None:
            for route, channel in zip(self.routes, self.channels):
                if route.source.live and channel.policy is DropPolicy.DROP_OLDEST:
                    channel.set_capacity(size)
            log.debug("live batch size now %d (latency %.0f ms, limit %.0f ms)", size, max(recent),
                      self.max_latency * 1000)

    def _order(self) -> list[int]:
        """Source indices starting after the one served first last time: every source gets its turn."""
        n = len(self.routes)
        self._turn = (self._turn + 1) % n
        return [(self._turn + k) % n for k in range(n)]

    def _infer(self) -> None:
        self._ended = [False] * len(self.routes)
        self._turn = -1
        try:
            while (batch := self._next_batch()) is not None:
                t0 = time.perf_counter()
                results = self._segment(batch)
                share = (time.perf_counter() - t0) / len(batch)
                for frame in batch:
                    st = self.routes[frame.source].stats
                    st.stages["inference"].seconds += share
                    st.stages["inference"].items += 1
                    st.frames_inferred += 1
                self._batches += 1
                if self.live:
                    self._live_batch.ran(len(batch), share)
                for r in results:
                    self.results.put(r)
                if self.live:
                    self._adapt_live_batch()
        except Stopped:
            pass
        finally:
            for channel in self.channels:
                channel.cancel()
            self.results.close()

    def _render(self) -> None:
        recent: deque[float] = deque(maxlen=_FPS_WINDOW)  # when the last frames were drawn, for --show-fps
        primary: BaseException | None = None
        try:
            while True:
                try:
                    item = self.results.get(timeout=_POLL)
                except TimeoutError:
                    continue
                if item is END:
                    break
                route = self.routes[item.frame.source]
                stats = route.stats
                if self._on_result is not None:
                    self._on_result(item)
                for export in route.exports:
                    export.write(item)
                t0 = time.perf_counter()
                recent.append(t0)
                fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else None
                image = route.renderer(item, fps=fps)
                t1 = time.perf_counter()
                route.sink.write(item.frame.with_image(image))
                t2 = time.perf_counter()
                stats.stages["render"].seconds += t1 - t0
                stats.stages["render"].items += 1
                stats.stages["write"].seconds += t2 - t1
                stats.stages["write"].items += 1
                stats.frames_written += 1
                stats.record_latency(time.monotonic() - item.frame.captured)
                if self._on_frame is not None:
                    self._on_frame(stats)
            if not self._abort.is_set():
                for route in self.routes:
                    if route.stats.completed:
                        route.sink.finish()
        except BaseException as exc:
            primary = exc  # a sink that also fails to close must not hide why the run stopped
            raise
        finally:
            self.results.cancel()
            try:
                self._close_outputs()
            except BaseException:
                if primary is None:
                    raise
                log.debug("closing the outputs failed too, after: %s", primary, exc_info=True)

    def _close_outputs(self) -> None:
        """Close every export and sink, all of them even when one fails; raise the first failure.

        A sink shared by several routes (the live view) is closed once.
        """
        seen: set[int] = set()
        closeables = []
        for c in (c for route in self.routes for c in (*route.exports, route.sink)):
            if id(c) not in seen:
                seen.add(id(c))
                closeables.append(c)
        close_all(closeables)

    # -- supervision (the caller's thread) ----------------------------------------------------------
    def run(self) -> RunStats:
        """Run to the end of the sources, a stop, or the first error; re-raise that error here.

        Returns the whole run's figures (each route's are in ``route.stats``). A
        ``KeyboardInterrupt`` in the caller's thread requests a graceful stop; a second one
        aborts. Either way every sink is closed before this returns.
        """
        t_start = self._started = time.monotonic()
        names = [f"capture{i}" for i in range(len(self.routes))]
        done = {name: threading.Event() for name in (*names, "inference", "render")}
        targets = [(name, functools.partial(self._capture, i)) for i, name in enumerate(names)]
        targets += [("inference", self._infer), ("render", self._render)]
        threads = {name: threading.Thread(target=self._guard, args=(fn, done[name]), name=f"streamseg-{name}",
                                          daemon=True)
                   for name, fn in targets}
        for t in threads.values():
            t.start()
        any_live = any(r.source.live for r in self.routes)
        # Wait on an Event, not Thread.join(): on Python 3.11 a KeyboardInterrupt inside join()
        # can mark a running thread as finished, and the process would exit before the sink closes.
        while not done["render"].is_set():
            if (self.duration is not None and any_live and not self.stop_event.is_set()
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
        # The sinks are closed. Upstream threads end on their own (their channels are
        # cancelled); do not wait long for one stuck in a blocking read.
        deadline = time.monotonic() + self._join_timeout
        for name in ("render", "inference", *names):
            done[name].wait(max(0.0, deadline - time.monotonic()))
        for name in threads:
            if not done[name].is_set():
                log.warning("%s thread still busy after the stop; leaving it behind", name)
        wall = time.monotonic() - t_start
        for route, channel in zip(self.routes, self.channels):
            st = route.stats
            st.frames_dropped = channel.dropped
            st.reconnects = route.source.reconnects
            st.gap_seconds = route.source.gap_seconds
            st.damaged_packets = route.source.damaged_packets
            st.time_jumps = route.source.jumps
            st.wall_seconds = wall
        self.stats = RunStats.total((r.stats for r in self.routes), batches=self._batches,
                                    wall_seconds=wall,
                                    completed=all(r.stats.completed or r.error is not None for r in self.routes))
        if self._error is not None:
            raise self._error
        if all(r.error is not None for r in self.routes):  # nothing succeeded: the run failed
            raise self._route_errors[0]
        return self.stats

    def _guard(self, fn: Callable[[], None], done: threading.Event) -> None:
        try:
            fn()
        except BaseException as exc:  # every error reaches the caller through run()
            self._fail(exc)
        finally:
            done.set()
