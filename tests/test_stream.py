"""The prefetching reader: order, completeness, bounded look-ahead, errors surface."""

import threading
import time

import pytest

from weightspace.stream import prefetched


def test_yields_every_item_in_order():
    assert list(prefetched(range(10), lambda x: x * x)) == [x * x for x in range(10)]
    assert list(prefetched([], lambda x: x)) == []


def test_look_ahead_is_bounded():
    loaded, consumed, peak = [], [0], [0]
    lock = threading.Lock()

    def load(x):
        with lock:
            loaded.append(x)
            peak[0] = max(peak[0], len(loaded) - consumed[0])
        return x

    for _ in prefetched(range(50), load, depth=2):
        time.sleep(0.002)
        consumed[0] += 1
    assert peak[0] <= 3  # the item in hand plus at most depth ahead


def test_next_item_is_read_while_the_caller_works():
    started = [threading.Event() for _ in range(5)]

    def load(x):
        started[x].set()
        return x

    for x in prefetched(range(5), load, depth=1):
        if x + 1 < 5:  # the caller has not asked for x + 1 yet, but its read has begun
            assert started[x + 1].wait(timeout=10)


def test_load_errors_reach_the_caller():
    def load(x):
        if x == 3:
            raise ValueError("model 3 is broken")
        return x

    with pytest.raises(ValueError, match="model 3 is broken"):
        list(prefetched(range(6), load))
