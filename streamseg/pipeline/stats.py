"""What a run measures: frames, drops, stage times, latency, reconnects; per source and for the whole run."""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from streamseg.roles import Source

_LATENCY_WINDOW = 500  # frames over which latency percentiles are taken
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # seconds: the /metrics histogram's upper bounds
STAGES = ("decode", "inference", "render", "write")


@dataclass
class StageTimes:
    """Seconds spent in a stage and how many items it handled (written by that stage's thread only)."""

    seconds: float = 0.0
    items: int = 0

    @property
    def mean_ms(self) -> float:
        return 1000 * self.seconds / self.items if self.items else 0.0


@dataclass
class RunStats:
    """One source's figures, or the whole run's (:meth:`total`)."""

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
    damaged_packets: int = 0  # packets the decoder rejected and skipped
    size_changes: int = 0  # times the source's picture size changed (frames letterboxed to the first size)
    time_jumps: int = 0  # times the source's timestamps went back or leapt ahead
    latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=_LATENCY_WINDOW))  # capture -> written
    stages: dict[str, StageTimes] = field(default_factory=lambda: {name: StageTimes() for name in STAGES})
    latency_buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))  # frames at or under each
    latency_count: int = 0  # every frame whose latency was measured (the histogram's count and sum)
    latency_sum: float = 0.0  # seconds
    last_read: float | None = None  # time.monotonic() of the last frame read (health)

    def record_latency(self, seconds: float) -> None:
        """One written frame's capture-to-output latency (the render thread only)."""
        self.latency_ms.append(1000 * seconds)
        for k, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.latency_buckets[k] += 1
        self.latency_count += 1
        self.latency_sum += seconds

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
        if self.damaged_packets:
            gaps += f", damaged packets skipped {self.damaged_packets}"
        if self.size_changes:
            gaps += f", picture size changes {self.size_changes}"
        if self.time_jumps:
            gaps += f", timestamp jumps {self.time_jumps}"
        lat = self.latency_percentiles()
        latency = f"latency p50 {lat['p50']:.0f} ms, p95 {lat['p95']:.0f} ms; " if self.live else ""
        return (f"frames read {self.frames_read}, written {self.frames_written}, dropped {self.frames_dropped}{gaps}; "
                f"{latency}{self.fps:.1f} fps over {self.wall_seconds:.1f} s; mean ms per frame: {stages}")

    @classmethod
    def total(cls, parts: Iterable[RunStats], *, batches: int, wall_seconds: float, completed: bool) -> RunStats:
        """The sum of several sources' figures (latencies pooled)."""
        out = cls(batches=batches, wall_seconds=wall_seconds, completed=completed)
        for st in parts:
            for name in ("frames_read", "frames_inferred", "frames_written", "frames_dropped", "reconnects",
                         "gap_seconds", "damaged_packets", "size_changes", "time_jumps"):
                setattr(out, name, getattr(out, name) + getattr(st, name))
            out.live = out.live or st.live
            out.latency_ms.extend(st.latency_ms)
            for name, stage in st.stages.items():
                out.stages[name].seconds += stage.seconds
                out.stages[name].items += stage.items
        return out


COUNTERS = ("frames_read", "frames_inferred", "frames_written", "frames_dropped", "reconnects", "bytes_written",
            "size_changes", "time_jumps")


@dataclass
class SourceFigures:
    """One source's live figures: what ``/stats`` shows and ``/metrics`` and ``/healthz`` read, and what a fleet's
    worker sends its driver. ``name``, ``worker``, ``restarts`` and ``description`` are filled by a run or a fleet
    that names its sources."""

    source: str  # the source's description (no password or token); a fleet's source name
    frames_read: int = 0
    frames_inferred: int = 0
    frames_written: int = 0
    frames_dropped: int = 0
    queue_depth: int = 0
    fps: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=lambda: {"p50": 0.0, "p95": 0.0})
    latency_histogram: dict | None = None  # {"buckets": counts per LATENCY_BUCKETS, "count": n, "sum": seconds}
    stages: dict[str, dict[str, float]] = field(default_factory=dict)  # stage -> {"seconds": s, "items": n}
    reconnects: int = 0
    gap_seconds: float = 0.0
    size_changes: int = 0  # the picture's size changed (frames letterboxed to the first size)
    time_jumps: int = 0  # the stream's timestamps went back or leapt ahead (carried on evenly)
    connected: bool = True
    live: bool = True
    ended: bool = False
    last_read_age: float | None = None  # seconds since the last frame read
    bytes_written: int = 0
    publish_reconnects: int = 0
    publish_failures: int = 0  # published streams' connections that failed, ended or stalled
    error: str | None = None
    name: str | None = None  # a run's name for the source (its file names)
    worker: str | None = None  # a fleet: the worker that runs it
    restarts: int | None = None  # a fleet: times it was started again
    description: str | None = None  # a fleet: the source's description (``source`` holds its name)

    def as_dict(self) -> dict:
        """The JSON of ``/stats``: every figure; the naming fields only where they are set."""
        out = dataclasses.asdict(self)
        for key in ("name", "worker", "restarts", "description"):
            if out[key] is None:
                del out[key]
        if out["latency_histogram"] is None:
            del out["latency_histogram"]
        return out

    def totals(self, base: Mapping[str, int]) -> dict[str, int]:
        """Its :data:`COUNTERS` plus ``base`` (the counts of the source's earlier runs)."""
        return {k: base.get(k, 0) + getattr(self, k) for k in COUNTERS}


@dataclass
class Snapshot:
    """A run's (or a fleet's) live figures at one moment: one :class:`SourceFigures` per source, and the batch."""

    sources: list[SourceFigures] = field(default_factory=list)
    batches: int = 0  # forwards run
    batch_size: int = 0  # frames per forward now (live: the adaptive live batch)
    workers: list[dict] | None = None  # a fleet: each worker's state

    def as_dict(self) -> dict:
        out = {"sources": [s.as_dict() for s in self.sources], "batches": self.batches, "batch_size": self.batch_size}
        if self.workers is not None:
            out["workers"] = self.workers
        return out


def source_figures(st: RunStats, source: Source, *, channel_depth: int, dropped: int, bytes_written: int,
                   elapsed: float, error: str | None, publish_reconnects: int = 0,
                   publish_failures: int = 0) -> SourceFigures:
    """One source's live figures from its stats and the state of its source and channel."""
    return SourceFigures(
        source=source.description, frames_read=st.frames_read, frames_inferred=st.frames_inferred,
        frames_written=st.frames_written, frames_dropped=dropped, queue_depth=channel_depth,
        fps=st.frames_written / elapsed if elapsed > 0 else 0.0, latency_ms=st.latency_percentiles(),
        latency_histogram={"buckets": list(st.latency_buckets), "count": st.latency_count, "sum": st.latency_sum},
        stages={name: {"seconds": t.seconds, "items": t.items} for name, t in st.stages.items()},
        reconnects=source.reconnects, gap_seconds=source.gap_seconds, size_changes=st.size_changes,
        time_jumps=source.jumps, connected=bool(source.connected), live=st.live,
        ended=st.completed, last_read_age=None if st.last_read is None else time.monotonic() - st.last_read,
        bytes_written=bytes_written, publish_reconnects=publish_reconnects,
        publish_failures=publish_failures, error=error)
