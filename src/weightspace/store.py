"""Per-model Zarr stores: one array per tensor, source dtype kept.

Layout of ``{model}.zarr`` (Zarr v3):

- one array per tensor, named by the tensor's name; float32 and float16 are stored as they
  are, bfloat16 as its uint16 bit pattern with the attribute ``dtype: "bfloat16"``;
- uncompressed (float weights barely compress and compression halves read speed);
- a 2-D tensor is chunked in row blocks of about ``CHUNK_BYTES`` inside a single shard, so a
  tensor is one file on disk and a row block of it can still be read alone;
- group attributes: ``model`` (key), ``id``, ``revision``, ``format`` and the model's JSON
  configs (``config``, ``adapter_config``).
"""

from __future__ import annotations

import math
import os
import re
from typing import Any

import numpy as np
import torch
import zarr

FORMAT = 1  # version of the store layout; bump it when the layout changes
CHUNK_BYTES = 4 << 20
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


def check_tensor_name(name: str, model: str = "?") -> str:
    """Tensor names become Zarr node names: refuse anything that could be a path."""
    if not _NAME.match(name) or ".." in name:
        raise ValueError(f"model {model}: tensor name {name!r} is not a safe name "
                         "(letters, digits, '_', '.', '-' only)")
    return name


def _layout(shape: tuple[int, ...], itemsize: int) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """Chunks and shards for a tensor: row blocks of about CHUNK_BYTES in one shard."""
    if len(shape) == 0:
        return (), None
    row_bytes = itemsize * int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else itemsize
    total = row_bytes * shape[0]
    if total <= CHUNK_BYTES or len(shape) == 1:
        return tuple(max(1, s) for s in shape), None
    rows = max(1, CHUNK_BYTES // max(1, row_bytes))
    chunks = (rows,) + tuple(shape[1:])
    shard_rows = math.ceil(shape[0] / rows) * rows
    return chunks, (shard_rows,) + tuple(shape[1:])


def write_tensor(group: zarr.Group, name: str, tensor: torch.Tensor, model: str = "?") -> None:
    """Write one tensor into an open group, keeping its dtype (bf16 as uint16 bits)."""
    check_tensor_name(name, model)
    tensor = tensor.detach().cpu().contiguous()
    attrs: dict[str, Any] = {}
    if tensor.dtype == torch.bfloat16:
        data = tensor.view(torch.uint16).numpy()
        attrs["dtype"] = "bfloat16"
    elif tensor.dtype in (torch.float32, torch.float16, torch.float64):
        data = tensor.numpy()
    else:
        data = tensor.numpy()
    chunks, shards = _layout(tuple(data.shape), data.dtype.itemsize)
    arr = group.create_array(name, shape=data.shape, dtype=data.dtype, chunks=chunks or "auto",
                             shards=shards, compressors=None, attributes=attrs, fill_value=0)
    arr[...] = data


def source_dtype(arr: zarr.Array) -> str:
    """The tensor's dtype in the source checkpoint ('bfloat16', 'float32', ...)."""
    return arr.attrs.get("dtype", str(arr.dtype))


def to_torch(data: np.ndarray, dtype: str) -> torch.Tensor:
    """Numpy data read from a store back to a torch tensor of the source dtype."""
    t = torch.from_numpy(np.ascontiguousarray(data))
    if dtype == "bfloat16":
        return t.view(torch.bfloat16)
    return t


class ModelStore:
    """Read access to one model's Zarr store."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self.group = zarr.open_group(self.path, mode="r")
        self.attrs = dict(self.group.attrs)

    @property
    def key(self) -> str:
        return self.attrs.get("model", os.path.basename(self.path).removesuffix(".zarr"))

    def names(self) -> list[str]:
        return sorted(self.group.array_keys())

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.group[name].shape)

    def dtype(self, name: str) -> str:
        return source_dtype(self.group[name])

    def read(self, name: str, rows: slice | None = None) -> torch.Tensor:
        """The tensor (or a row block of it) in its source dtype."""
        arr = self.group[name]
        data = arr[rows] if rows is not None else arr[...]
        return to_torch(np.asarray(data), source_dtype(arr))

    def nbytes(self, name: str) -> int:
        arr = self.group[name]
        return int(np.prod(arr.shape, dtype=np.int64)) * arr.dtype.itemsize


def write_store(path: str | os.PathLike, tensors, attrs: dict[str, Any], model: str = "?") -> None:
    """Write a whole store at ``path`` from an iterable of (name, tensor) pairs.

    ``tensors`` may be a generator, so only one tensor is in memory at a time.
    """
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    for name, tensor in tensors:
        write_tensor(group, name, tensor, model)
    group.attrs.update({**attrs, "weightspace_store_format": FORMAT})
