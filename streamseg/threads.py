"""One place decides how many threads each stage gets from the cores this process may use.

A run's stages share the cores: torch's intra-op pool runs the forward, FFmpeg's decoder and
x264's encoder each keep a pool, and OpenCV has one of its own. Left alone, each sizes its pool
to the whole machine, and on a small machine they fight: torch's OpenMP workers spin after each
parallel region, and one busy neighbour process costs several times the throughput.
:func:`plan` gives each stage its share; :func:`apply` sets torch's and OpenCV's (process-wide);
sources and sinks take ``decode`` and ``encode`` when they open. ``OMP_WAIT_POLICY=PASSIVE``
(workers sleep instead of spinning) must be set before torch loads: the command line does that,
unless the user set it; library code never changes the environment.
"""

from __future__ import annotations

import os
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

    def describe(self) -> str:
        if not self.managed:
            return f"threads: the libraries' own defaults ({self.cores} cores)"
        wait = os.environ.get("OMP_WAIT_POLICY", "").lower() or "library default"
        return (f"threads: forward {self.forward}, decode {self.decode}, encode {self.encode}, "
                f"opencv {self.opencv} of {self.cores} cores; OpenMP wait policy {wait}")


def plan(forward: int | None = None, *, cores: int | None = None, managed: bool = True) -> ThreadBudget:
    """The budget for ``cores`` (default: this process's). ``forward`` overrides the model's share (``--threads``).

    The forward gets every core: it is the bottleneck, and with passive OpenMP waiting its workers
    yield the cores while the other stages run. Decoding, encoding and OpenCV get one thread each
    on small machines (their work per frame is a few milliseconds and parallel pools only add
    contention there), and a quarter of the cores each on larger ones.

    Measured on 2 cores (SegFormer-B0 shape, 720p, batch 8; e2e frames/s, idle / beside one busy
    process): the libraries' defaults 3.10 / 1.50; this budget with passive waiting 2.95-3.00 /
    2.00-2.10. On the small demo model at 360p: 46 / 21 and 39 / 39. Spinning OpenMP workers are
    what a neighbour punishes: a longer spin (GOMP_SPINCOUNT=100000) gave 46 idle and 6 loaded.
    """
    cores = cores or available_cores()
    if not managed:
        return ThreadBudget(cores=cores, forward=0, decode=0, encode=0, opencv=0, managed=False)
    side = max(1, cores // 4)
    return ThreadBudget(cores=cores, forward=max(1, forward or cores), decode=side, encode=side, opencv=side)


def apply(budget: ThreadBudget) -> None:
    """Set torch's and OpenCV's pools for this process (both are process-wide settings)."""
    if not budget.managed:
        return
    import cv2
    import torch

    if torch.get_num_threads() != budget.forward:
        torch.set_num_threads(budget.forward)
    cv2.setNumThreads(budget.opencv)
