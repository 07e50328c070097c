"""Streaming reads that overlap with compute.

``prefetched`` loads the next items in a background thread while the caller works on the
current one (Zarr reads and numpy copies release the GIL, so reading and the Gram products run
at the same time). At most ``depth + 1`` loaded items are alive at once, so memory stays bounded
by a few models' matrices whatever the number of models.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar
from collections.abc import Callable, Iterable, Iterator

T = TypeVar("T")
R = TypeVar("R")


def prefetched(items: Iterable[T], load: Callable[[T], R], depth: int = 2) -> Iterator[R]:
    """Yield ``load(item)`` for every item in order, loading up to ``depth`` items ahead."""
    it = iter(items)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
        pending = deque(pool.submit(load, item) for _, item in zip(range(depth), it))
        while pending:
            current = pending.popleft()
            for item in it:  # keep the queue full: schedule one more before waiting
                pending.append(pool.submit(load, item))
                break
            yield current.result()


def to_device(x, device: str):
    """Move a CPU tensor (or an object of tensors with ``map_tensors``, as layers.LowRank) to
    ``device``; on cuda through pinned memory, without blocking, so the copy overlaps with the
    previous model's products."""
    if hasattr(x, "map_tensors"):
        return x.map_tensors(lambda t: to_device(t, device))
    if str(device).startswith("cuda"):
        return x.pin_memory().to(device, non_blocking=True)
    return x
