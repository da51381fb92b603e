"""One place decides how many threads each stage gets from the cores this process may use.

A run's stages share the cores: torch's intra-op pool runs the forward, FFmpeg's decoder and
x264's encoder each keep a pool, and OpenCV has one of its own. Left alone, each sizes its pool
to the whole machine, and on a small machine they fight: torch's OpenMP workers spin after each
parallel region, and one busy neighbour process costs several times the throughput.
:func:`plan` gives each stage its share; :func:`apply` sets torch's and OpenCV's (process-wide);
sources and sinks take ``decode`` and ``encode`` when they open; :class:`ThreadTuner` picks the
forward's thread count while the run goes, because the best one depends on what else runs.

OpenMP's wait policy is left as the user has it (passive waiting wakes sleeping workers at every
parallel region; benchmarks/README.md has the measurements behind these choices).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's or taskset's share)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True, kw_only=True)
class ThreadBudget:
    """Threads per stage. ``managed`` false: every library keeps its own defaults (``--threads library``)."""

    cores: int
    forward: int  # torch intra-op threads (the model)
    decode: int  # FFmpeg decoder threads per source (0: FFmpeg's own choice)
    encode: int  # x264 threads per output file (0: x264's own choice)
    opencv: int  # OpenCV's pool (blending, blurring, JPEG)
    managed: bool = True

    tune: bool = True  # let a ThreadTuner choose between ``forward`` and half of it while running

    @property
    def tuned_counts(self) -> tuple[int, int] | None:
        """The two forward thread counts the tuner chooses between, or ``None`` when there is no choice."""
        return (self.forward, max(1, self.forward // 2)) if self.managed and self.tune and self.forward > 1 else None

    def describe(self, tuner: ThreadTuner | None = None) -> str:
        if not self.managed:
            return f"threads: the libraries' own defaults ({self.cores} cores)"
        forward = tuner.describe() if tuner is not None else f"forward {self.forward}"
        decode, encode = (n or "auto" for n in (self.decode, self.encode))
        return f"threads: {forward}, decode {decode}, encode {encode}, opencv {self.opencv} of {self.cores} cores"


def plan(forward: int | None = None, *, cores: int | None = None, managed: bool = True) -> ThreadBudget:
    """The budget for ``cores`` (default: this process's). ``forward`` overrides the model's share (``--threads``).

    The forward gets every core: it is the bottleneck, and the :class:`ThreadTuner` halves its
    threads while that is faster (beside a busy neighbour). Decoding and x264 keep their own
    pools (0: FFmpeg's choice; they use them in bursts, between the forward's parallel regions),
    and OpenCV gets a quarter of the cores (one on small machines).
    """
    cores = cores or available_cores()
    if not managed:
        return ThreadBudget(cores=cores, forward=0, decode=0, encode=0, opencv=0, managed=False)
    opencv = max(1, cores // 4)
    return ThreadBudget(cores=cores, forward=max(1, forward or cores), decode=0, encode=0, opencv=opencv,
                        tune=forward is None)


def apply(budget: ThreadBudget) -> None:
    """Set torch's and OpenCV's pools for this process (both are process-wide settings)."""
    if not budget.managed:
        return
    import cv2
    import torch

    if torch.get_num_threads() != budget.forward:
        torch.set_num_threads(budget.forward)
    cv2.setNumThreads(budget.opencv)


class ThreadTuner:
    """Chooses the forward's threads while the run goes: the budget's, or half of them, whichever is faster now.

    On a machine to itself, a forward split over every core is fastest. Beside a busy neighbour it is
    not: every parallel region waits for whichever of its threads the OS has set aside, and fewer
    threads win. So every ``interval`` batches the tuner runs ``probe`` batches with
    the other count and keeps whichever took less time per frame, by a 10% margin; a probe that
    changes nothing doubles the interval (up to ``max_interval``). It wraps the segment function and
    runs on the inference thread, where the forward runs.
    """

    def __init__(self, segment, counts: tuple[int, int], *, first: int = 8, interval: int = 12,
                 probe: int = 2, max_interval: int = 96, warm_seconds: float = 10.0) -> None:
        self.segment = segment
        self.counts = counts
        self.current = counts[0]
        self.frames_at: dict[int, int] = {c: 0 for c in counts}  # frames segmented with each count
        self.switches = 0
        self._base, self._interval, self._probe, self._max = interval, first, probe, max_interval
        self._since = 0  # batches since the last probe
        self._recent: list[float] = []  # seconds per frame of the last batches at the current count
        self._probing: list[float] | None = None
        # No probe before this much running: a probe costs short jobs more than it can win (with OpenVINO each
        # thread count is also compiled once: a 100-frame 720p job ran 9% slower with probes from 3 s on).
        self._warm_seconds = warm_seconds
        self._started: float | None = None

    def __call__(self, frames):
        import torch

        self._started = self._started or time.monotonic()
        other = self.counts[1] if self.current == self.counts[0] else self.counts[0]
        threads = other if self._probing is not None else self.current
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        t0 = time.perf_counter()
        results = self.segment(frames)
        per_frame = (time.perf_counter() - t0) / max(1, len(frames))
        self.frames_at[threads] += len(frames)
        if self._probing is not None:
            self._probing.append(per_frame)
            if len(self._probing) >= self._probe:
                self._decide(other)
        else:
            self._recent = [*self._recent[-(self._probe - 1):], per_frame] if self._since else []
            self._since += 1
            warm = time.monotonic() - self._started >= self._warm_seconds
            if self._since >= self._interval and len(self._recent) >= self._probe and warm:
                self._probing = []
        return results

    def _decide(self, other: int) -> None:
        mine, theirs = sorted(self._recent)[len(self._recent) // 2], sorted(self._probing)[len(self._probing) // 2]
        if theirs < 0.9 * mine:
            self.current, self._interval = other, self._base
            self.switches += 1
        else:
            self._interval = min(self._max, 2 * self._interval if self._interval >= self._base else self._base)
        self._probing, self._since, self._recent = None, 0, []

    def describe(self) -> str:
        shares = ", ".join(f"{c} for {n} frames" for c, n in self.frames_at.items() if n)
        return f"forward threads tuned between {self.counts[0]} and {self.counts[1]} ({shares or 'no frames'})"
