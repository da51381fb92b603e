import threading
import time

import pytest

from streamseg.config import DropPolicy
from streamseg.errors import Stopped
from streamseg.pipeline.channel import END, Channel


def test_wait_policy_is_lossless_with_a_slow_consumer():
    ch = Channel(2, DropPolicy.WAIT)
    got = []

    def consume():
        while (item := ch.get(timeout=5)) is not END:
            time.sleep(0.005)
            got.append(item)

    t = threading.Thread(target=consume)
    t.start()
    for i in range(100):
        ch.put(i, timeout=5)
    ch.close()
    t.join(5)
    assert got == list(range(100))
    assert ch.dropped == 0


def test_drop_oldest_keeps_the_newest_and_counts_drops():
    ch = Channel(3, DropPolicy.DROP_OLDEST)
    for i in range(10):
        ch.put(i)  # never blocks
    ch.close()
    assert [ch.get(), ch.get(), ch.get()] == [7, 8, 9]
    assert ch.get() is END and ch.get() is END
    assert ch.dropped == 7


def test_wait_put_times_out_when_full():
    ch = Channel(1, DropPolicy.WAIT)
    ch.put("a")
    with pytest.raises(TimeoutError, match="full"):
        ch.put("b", timeout=0.05)


def test_get_times_out_when_empty():
    with pytest.raises(TimeoutError, match="empty"):
        Channel(1).get(timeout=0.05)


def test_cancel_wakes_a_blocked_producer():
    ch = Channel(1, DropPolicy.WAIT)
    ch.put("a")
    errors = []

    def produce():
        try:
            ch.put("b")  # blocks: full, and nobody reads
        except Stopped as exc:
            errors.append(exc)

    t = threading.Thread(target=produce)
    t.start()
    time.sleep(0.05)
    ch.cancel()
    t.join(2)
    assert not t.is_alive()
    assert len(errors) == 1
    with pytest.raises(Stopped):
        ch.put("c")


def test_close_wakes_a_blocked_consumer_after_the_queued_items():
    ch = Channel(4)
    ch.put(1)
    result = []
    t = threading.Thread(target=lambda: result.extend([ch.get(), ch.get()]))
    t.start()
    time.sleep(0.05)
    ch.close()
    t.join(2)
    assert result == [1, END]


def test_put_after_close_is_a_bug():
    ch = Channel(1)
    ch.close()
    with pytest.raises(RuntimeError, match="after close"):
        ch.put(1)
