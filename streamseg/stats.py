"""What a run measures: frames, drops, stage times, latency, reconnects; per source and for the whole run."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

_LATENCY_WINDOW = 500  # frames over which latency percentiles are taken
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
    latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=_LATENCY_WINDOW))  # capture -> written
    stages: dict[str, StageTimes] = field(default_factory=lambda: {name: StageTimes() for name in STAGES})

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
                         "gap_seconds", "damaged_packets"):
                setattr(out, name, getattr(out, name) + getattr(st, name))
            out.live = out.live or st.live
            out.latency_ms.extend(st.latency_ms)
            for name, stage in st.stages.items():
                out.stages[name].seconds += stage.seconds
                out.stages[name].items += stage.items
        return out
