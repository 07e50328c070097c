"""Streaming reads that overlap with compute.

``prefetched`` loads the next items in a background thread while the caller works on the
current one (Zarr reads and numpy copies release the GIL, so reading and the Gram products run
at the same time). At most ``depth + 1`` loaded items are alive at once, so memory stays bounded
by a few models' matrices whatever the number of models.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar
from collections.abc import Callable, Iterable, Iterator

if TYPE_CHECKING:
    import torch

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
    """Move a CPU tensor (or an object of tensors with ``map_tensors``, as core.lowrank.LowRank) to
    ``device``; on cuda through pinned memory, without blocking, so the copy overlaps with the
    previous model's products."""
    if hasattr(x, "map_tensors"):
        return x.map_tensors(lambda t: to_device(t, device))
    if str(device).startswith("cuda"):
        return x.pin_memory().to(device, non_blocking=True)
    return x

def model_gram_dense(read_rows, N: int, m: int, n: int, block_rows: int, device="cpu",
                     known: torch.Tensor | None = None, on_block=None,
                     center: torch.Tensor | None = None) -> torch.Tensor:
    """K_ij = ⟨W_i, W_j⟩ accumulated over row blocks: K += Σ_blocks V_b V_bᵀ.

    ``read_rows(i, rows, out)`` returns rows ``rows`` of model i (filling ``out``, a flat
    buffer, where it can: then no per-read allocation); V_b stacks the flattened row
    block of every model (N × block_rows·n), so memory is N·block_rows·n, not N·m·n. With
    ``known`` (the Gram of the first N0 models) only the columns of the new models are
    computed, K[:, N0:] += V_b V_b[N0:]ᵀ; the old models are still read for these cross terms.
    The next block is read in a background thread while this one is multiplied (on cuda into
    page-locked buffers, copied without blocking; an event per buffer keeps the reader from
    refilling one whose copy has not ended); ``on_block``
    (rows, V_b as N × r × n) sees each block after K has (it may modify it). With ``center``
    (μ, m×n) the blocks are centred as they are copied in, X_b = W_b − μ_b, which is what
    ``on_block`` then sees, and the raw Gram is recovered exactly:
    ⟨W_i, W_j⟩_b = ⟨X_i, X_j⟩_b + a_i + a_j + ‖μ_b‖² with a_i = ⟨X_{i,b}, μ_b⟩.
    """
    import torch

    from .core import hosvd

    K, N0 = hosvd.grown(known, N, device)
    V = torch.empty(N, min(block_rows, m) * n, dtype=hosvd.ACC, device=device)  # one buffer, reused
    blocks = [slice(r0, min(m, r0 + block_rows)) for r0 in range(0, m, block_rows)]

    bufs: dict[int, torch.Tensor] = {}  # two read buffers, filled alternately (double buffering)
    cuda = torch.device(device).type == "cuda"
    copied: dict[int, torch.cuda.Event] = {}  # on cuda: the copy out of buffer k % 2 has ended

    def load(item):  # in the prefetch thread: the N models' rows into one float32 buffer
        k, rows = item  # (float64 if a model is: bf16/fp16 → float32 is exact, mixed dtypes too)
        width = (rows.stop - rows.start) * n
        if k % 2 in copied:  # the GPU may still be copying this buffer's previous block
            copied.pop(k % 2).synchronize()
        buf = bufs.get(k % 2)
        if buf is None:  # page-locked on cuda, so the copy to the GPU runs without the CPU
            bufs[k % 2] = buf = torch.empty(N, V.shape[1], dtype=torch.float32, pin_memory=cuda)
        for i in range(N):
            part = read_rows(i, rows, out=buf[i, :width]).reshape(-1)
            if part.data_ptr() == buf[i].data_ptr():  # read straight into the buffer
                continue
            want = torch.float64 if part.dtype == torch.float64 else torch.float32
            if want == torch.float64 and buf.dtype != want:
                wider = torch.empty(N, V.shape[1], dtype=want, pin_memory=cuda)
                wider[:i, :width].copy_(buf[:i, :width])
                bufs[k % 2] = buf = wider
            buf[i, :width].copy_(part)
        return k, buf[:, :width]

    from tqdm import tqdm

    steps = zip(blocks, prefetched(list(enumerate(blocks)), load, depth=1))
    for rows, (k, block) in tqdm(steps, total=len(blocks), desc=f"model Gram ({N} models, row blocks)",
                                 mininterval=5, disable=len(blocks) < 2):
        r = rows.stop - rows.start
        Vb = V[:, : r * n]
        mu = None if center is None else center[rows].reshape(-1)
        Vb.copy_(block, non_blocking=cuda)  # widened to float64 as it is copied
        if cuda:
            copied[k % 2] = torch.cuda.Event()
            copied[k % 2].record()
        if mu is not None:
            Vb.sub_(mu)  # in place after the widening copy: 4× faster than a mixed-dtype sub
        del block
        if N0:
            K[:, N0:].addmm_(Vb, Vb[N0:].T)
        else:  # the lower block triangle only
            hosvd.add_gram(K, Vb)
        if mu is not None:
            a = Vb @ mu
            K[:, N0:] += a[:, None] + a[None, N0:] + torch.dot(mu, mu)
        if on_block is not None:
            on_block(rows, Vb.view(N, r, n))
    K[N0:, :N0] = K[:N0, N0:].T
    return K
