"""How many frames a live batch takes: the size that keeps latency bounded and still pays.

Live sources start at one frame per batch. After each batch the inference thread reports the
batch's time per frame (:meth:`LiveBatch.ran`) and asks for the next size (:meth:`LiveBatch.adapt`)
with the capture-to-output latency of the frames last written:

* over ``max_latency``: halve;
* a larger batch that did not take at most 90% of the smaller one's time per frame: back one
  size, and try it again only after 50 batches (doubling up to 800). On a CPU a batch costs about
  its frames' time, so a larger one adds latency and nothing else; a GPU runs a batch in little
  more than one frame's time, and there the batch grows;
* grow by one while the model falls behind the sources (its time per frame at this size is longer
  than the interval between arriving frames: a model that keeps up at one frame gains nothing from
  waiting for more) and the latency, scaled to one more frame per batch, stays under 80% of the
  limit (so that the size does not swing around the limit).

After a change two batches pass before the next: the frames queued and in flight were taken at
the old size. No locks: the inference thread alone calls it.
"""

from __future__ import annotations

GROW_MARGIN = 0.8
GAIN = 0.9
RETRY = (50, 800)


class LiveBatch:
    def __init__(self, largest: int, max_latency: float, arrivals: float | None = None) -> None:
        self.largest, self.max_latency = largest, max_latency
        self.arrivals = arrivals  # frames per second arriving from every live source together (None: unknown)
        self.size = 1
        self.history: list[int] = []  # every change, for reports and tests
        self._settle = 0
        self._batches = 0
        self._per_frame: dict[int, float] = {}  # recent inference seconds per frame at each batch size
        self._retry_at: dict[int, tuple[int, int]] = {}  # size -> (batch count to try it again at, wait)

    def ran(self, frames: int, seconds_per_frame: float) -> None:
        """One batch of ``frames`` ran at ``seconds_per_frame`` (a moving average per size)."""
        self._batches += 1
        before = self._per_frame.get(frames)
        self._per_frame[frames] = seconds_per_frame if before is None else 0.7 * before + 0.3 * seconds_per_frame

    def adapt(self, latency: float | None) -> int | None:
        """The new size after a batch whose frames' worst latency (seconds) was ``latency``; ``None``: unchanged."""
        if self._settle:
            self._settle -= 1
            return None
        if latency is None:
            return None
        size = self.size
        smaller, larger = self._per_frame.get(size - 1), self._per_frame.get(size)
        if latency > self.max_latency and size > 1:
            size = max(1, size // 2)
        elif size > 1 and smaller is not None and larger is not None and larger > GAIN * smaller:
            wait = min(RETRY[1], 2 * self._retry_at[size][1]) if size in self._retry_at else RETRY[0]
            self._retry_at[size] = (self._batches + wait, wait)
            size -= 1
        elif (size < self.largest and self._behind(size) and latency * (size + 1) / size < GROW_MARGIN * self.max_latency
              and self._batches >= self._retry_at.get(size + 1, (0, 0))[0]):
            size += 1
        if size == self.size:
            return None
        self.size = size
        self.history.append(size)
        self._settle = 2
        return size

    def _behind(self, size: int) -> bool:
        """Whether the model at this size takes longer per frame than frames take to arrive."""
        per_frame = self._per_frame.get(size)
        return self.arrivals is None or per_frame is None or per_frame * self.arrivals > 1.0
