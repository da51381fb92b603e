"""The one bounded hand-over between threads, with a named drop policy.

A :class:`Channel` has one producer and one consumer.

* The producer calls :meth:`Channel.put` and, from a ``finally``, :meth:`Channel.close`:
  the consumer then gets :data:`END` once the queue is drained, so it never waits
  for a producer that died.
* The consumer calls :meth:`Channel.get` and, from a ``finally``, :meth:`Channel.cancel`:
  a producer blocked in ``put`` (or calling it later) gets :class:`~streamseg.errors.Stopped`,
  so it never waits for a consumer that died.

With ``DropPolicy.WAIT`` a full channel blocks the producer (lossless). With
``DropPolicy.DROP_OLDEST`` the oldest queued item is discarded and counted in
:attr:`Channel.dropped`. Every wait is bounded by the caller's timeout.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from streamseg.config import DropPolicy
from streamseg.errors import Stopped

T = TypeVar("T")


class _End:
    """The end-of-stream marker type; :data:`END` is its only instance."""

    _instance: _End | None = None

    def __new__(cls) -> _End:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "END"


END = _End()


class Channel(Generic[T]):
    def __init__(self, maxsize: int, policy: DropPolicy = DropPolicy.WAIT, name: str = "channel",
                 on_put: Callable[[], None] | None = None) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self.policy = DropPolicy(policy)
        self.name = name
        self.dropped = 0
        self.high_water = 0  # the most items it ever held at once
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._cancelled = False
        self._on_put = on_put  # called after each put and at close: lets one consumer wait on several channels

    def put(self, item: T, timeout: float | None = None) -> None:
        """Queue ``item``; with WAIT, block while full (at most ``timeout`` s, then :class:`TimeoutError`).

        Raises :class:`Stopped` once the consumer has cancelled.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if self._closed:
                raise RuntimeError(f"{self.name}: put after close")
            if self.policy is DropPolicy.WAIT:
                while len(self._items) >= self.maxsize and not self._cancelled:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError(f"{self.name}: full for {timeout} s")
                    self._cond.wait(remaining)
            else:
                while len(self._items) >= self.maxsize:
                    self._items.popleft()
                    self.dropped += 1
            if self._cancelled:
                raise Stopped(f"{self.name}: consumer stopped")
            self._items.append(item)
            self.high_water = max(self.high_water, len(self._items))
            self._cond.notify_all()
        if self._on_put is not None:
            self._on_put()

    def get(self, timeout: float | None = None) -> T | _End:
        """The next item, or :data:`END` once closed and drained.

        Raises :class:`TimeoutError` when nothing arrives within ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"{self.name}: empty for {timeout} s")
                self._cond.wait(remaining)
            if self._items:
                item = self._items.popleft()
                self._cond.notify_all()
                return item
            return END

    def set_capacity(self, maxsize: int) -> None:
        """Hold at most ``maxsize`` items from now on; with DROP_OLDEST, what no longer fits is dropped and counted."""
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        with self._cond:
            self.maxsize = maxsize
            if self.policy is DropPolicy.DROP_OLDEST:
                while len(self._items) > maxsize:
                    self._items.popleft()
                    self.dropped += 1
            self._cond.notify_all()

    def close(self) -> None:
        """End of stream (producer side). Idempotent; never blocks; queued items stay."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._on_put is not None:
            self._on_put()

    def cancel(self) -> None:
        """The consumer is gone: drop what is queued and make every ``put`` raise :class:`Stopped`."""
        with self._cond:
            self._cancelled = True
            self._items.clear()
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
