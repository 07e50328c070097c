"""Per-model Zarr stores: one array per tensor, source dtype kept.

Layout of ``{model}.zarr`` (Zarr v3):

- one array per tensor, named by the tensor's name; float32 and float16 are stored as they
  are, bfloat16 as its uint16 bit pattern with the attribute ``dtype: "bfloat16"``;
- uncompressed (float weights barely compress and compression halves read speed);
- a 2-D tensor is chunked in row blocks of about ``CHUNK_BYTES`` inside a single shard, so a
  tensor is one file on disk and a row block of it can still be read alone (``RowFiles``
  reads it straight from the file, as the model-Gram pass does N²·m·n·8/budget times); a
  tensor larger than ``BLOCK_BYTES`` (an embedding of 128k×4096) gets one shard per row
  block of about ``BLOCK_BYTES``; extraction never holds a tensor whole;
- chunk keys ``c.0.0``: chunk files beside the array's ``zarr.json``, no subfolders;
- group attributes: ``model`` (key), ``id``, ``revision``, ``format`` and the model's JSON
  configs (``config``, ``adapter_config``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import threading
from dataclasses import dataclass
from typing import Any

from typing import TYPE_CHECKING

import numpy as np
import zarr

if TYPE_CHECKING:  # torch is imported where tensors are made: extracting a model needs none
    import torch

FORMAT = 1  # version of the store layout; bump it when the layout changes
CHUNK_BYTES = 1 << 20  # the unit of a partial read: row blocks of the model-Gram pass align to it
BLOCK_BYTES = 64 << 20  # a tensor larger than this is copied (and sharded) in row blocks
CHUNK_KEYS = {"name": "default", "separator": "."}  # c.0.0: chunk files beside zarr.json, no subfolders
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


def check_tensor_name(name: str, model: str = "?") -> str:
    """Tensor names become Zarr node names: refuse anything that could be a path."""
    if not _NAME.match(name) or ".." in name:
        raise ValueError(f"model {model}: tensor name {name!r} is not a safe name "
                         "(letters, digits, '_', '.', '-' only)")
    return name


def _layout(shape: tuple[int, ...], itemsize: int, block_bytes: int = BLOCK_BYTES
            ) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """Chunks and shards for a tensor: row blocks of about CHUNK_BYTES in one shard, or in
    shards of about ``block_bytes`` for a tensor larger than that. The rows are split evenly
    over the chunks (768 rows of 3 KB: 3 chunks of 256 rows, not 341 + 341 + 86), so the zero
    padding of the last chunk, which is written to disk, is less than one row per chunk."""
    if len(shape) == 0:
        return (), None
    row_bytes = itemsize * int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else itemsize
    total = row_bytes * shape[0]
    if total <= CHUNK_BYTES or len(shape) == 1:
        return tuple(max(1, s) for s in shape), None
    rows = -(-shape[0] // -(-total // CHUNK_BYTES))
    chunks = (rows,) + tuple(shape[1:])
    if total <= block_bytes:
        shard_rows = math.ceil(shape[0] / rows) * rows
    else:
        shard_rows = max(1, block_bytes // (rows * row_bytes)) * rows
    return chunks, (shard_rows,) + tuple(shape[1:])


# safetensors dtype → numpy dtype of the stored data (bfloat16 as its uint16 bits)
NUMPY_DTYPE = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "uint16", "I64": "int64",
               "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def _is_reader(tensor) -> bool:
    """A lazy reader of a safetensors tensor (``layers.RowReader``), not an in-memory tensor."""
    return hasattr(tensor, "get_shape") and hasattr(tensor, "get_dtype")


def _numpy(tensor) -> np.ndarray:
    """A CPU tensor (or a reader's rows, or numpy data) as numpy, bfloat16 as its uint16 bits."""
    if isinstance(tensor, np.ndarray):
        return tensor
    import torch

    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.uint16).numpy()
    return tensor.numpy()


def write_tensor(group: zarr.Group, name: str, tensor, model: str = "?",
                 block_bytes: int = BLOCK_BYTES) -> None:
    """Write one tensor into an open group, keeping its dtype (bf16 as uint16 bits).

    ``tensor`` is a torch tensor or a lazy reader (``layers.RowReader``: ``get_shape()``,
    ``get_dtype()``, ``[a:b]``). A reader's bytes go from the safetensors file straight into
    the Zarr chunk files (``copy_from_file``: no tensor is made); where that does not apply it
    is read and written one shard-sized row block at a time, so memory stays at one block."""
    fill_array(*create_array(group, name, tensor, model, block_bytes))


def create_array(group: zarr.Group, name: str, tensor, model: str = "?",
                 block_bytes: int = BLOCK_BYTES) -> tuple[zarr.Array, Any, np.ndarray | None]:
    """The first half of ``write_tensor``: the empty array (its metadata written) for the
    tensor, the tensor, and its numpy data if it is an in-memory tensor."""
    check_tensor_name(name, model)
    data = None if _is_reader(tensor) else _numpy(tensor)
    if data is not None:
        shape, bf16, dtype = data.shape, str(tensor.dtype) == "torch.bfloat16", data.dtype
    else:
        shape, bf16 = tuple(tensor.get_shape()), tensor.get_dtype() == "BF16"
        dtype = np.dtype(NUMPY_DTYPE[tensor.get_dtype()])
    attrs: dict[str, Any] = {"dtype": "bfloat16"} if bf16 else {}
    chunks, shards = _layout(shape, dtype.itemsize, block_bytes)
    arr = group.create_array(name, shape=shape, dtype=dtype, chunks=chunks or "auto",
                             shards=shards, compressors=None, attributes=attrs, fill_value=0,
                             chunk_key_encoding=CHUNK_KEYS)
    return arr, tensor, data


def fill_array(arr: zarr.Array | None, tensor, data: np.ndarray | None, layout: PlainLayout | None = None) -> None:
    """The second half of ``write_tensor``: the tensor's bytes into the array's files (``arr``
    may be None where ``layout`` is given and the bytes come from a file)."""
    if data is None and hasattr(tensor, "path"):
        layout = layout or plain_layout(arr)
        if layout is not None:
            copy_from_file(layout, tensor.path, tensor.start, tensor.end)
            return
    shape, shards = arr.shape, arr.shards
    if data is not None or shards is None or shards[0] >= shape[0]:
        arr[...] = data if data is not None else _rows(tensor, ...)
        return
    for start in range(0, shape[0], shards[0]):  # one whole shard per write: no read-modify-write
        stop = min(shape[0], start + shards[0])
        arr[start:stop] = _rows(tensor, slice(start, stop))


def _rows(tensor, idx) -> np.ndarray:
    """Rows of a tensor or reader as numpy (a reader's own numpy path needs no torch)."""
    return tensor.numpy(idx) if hasattr(tensor, "numpy") and _is_reader(tensor) else _numpy(tensor[idx])


_U64_MAX = 2**64 - 1


@dataclass(frozen=True)
class PlainLayout:
    """Where a tensor's bytes lie in the files of a local Zarr array of one of the layouts
    ``write_tensor`` makes: one uncompressed chunk (``shard_rows`` 0), or shards of
    ``shard_rows`` rows holding uncompressed row-block chunks of ``chunk_rows`` rows. A shard
    file ends in the sharding index, (offset, length) per inner chunk as little-endian uint64,
    then its CRC32C, as the sharding codec specifies; an empty chunk is (2⁶⁴−1, 2⁶⁴−1)."""

    root: str
    shape: tuple[int, ...]
    row_bytes: int
    shard_rows: int
    chunk_rows: int
    key: Any  # chunk coordinates → key, relative to root

    def file(self, shard: int) -> str:
        return os.path.join(self.root, *self.key((shard,) + (0,) * (len(self.shape) - 1)).split("/"))

    @property
    def per_shard(self) -> int:
        return self.shard_rows // self.chunk_rows

    def index_bytes(self) -> int:
        return 16 * self.per_shard + 4


def plain_layout(arr: zarr.Array) -> PlainLayout | None:
    """The layout of ``arr`` if it is one ``PlainLayout`` describes (a local store, C order,
    little endian, no compression), else None."""
    from zarr.codecs import BytesCodec, Crc32cCodec, Endian, ShardingCodec
    from zarr.storage import LocalStore

    shape = tuple(arr.shape)
    codecs = arr.metadata.codecs
    if (not isinstance(arr.store, LocalStore) or len(shape) == 0 or 0 in shape or len(codecs) != 1
            or getattr(arr.metadata, "zarr_format", 3) != 3):
        return None
    row_bytes = arr.dtype.itemsize * math.prod(shape[1:])
    root = os.path.join(str(arr.store.root), arr.path)
    key = arr.metadata.encode_chunk_key
    little = lambda c: isinstance(c, BytesCodec) and c.endian in (None, Endian.little)  # noqa: E731
    if isinstance(codecs[0], BytesCodec):  # one chunk holding the whole tensor
        if tuple(arr.chunks) != shape or not little(codecs[0]):
            return None
        return PlainLayout(root, shape, row_bytes, 0, shape[0], key)
    sh = codecs[0]
    if not (isinstance(sh, ShardingCodec) and len(sh.codecs) == 1 and little(sh.codecs[0])
            and tuple(type(c) for c in sh.index_codecs) == (BytesCodec, Crc32cCodec)
            and sh.index_location.value == "end" and tuple(sh.chunk_shape[1:]) == shape[1:]
            and tuple(arr.metadata.chunk_grid.chunk_shape[1:]) == shape[1:]):
        return None
    return PlainLayout(root, shape, row_bytes, arr.metadata.chunk_grid.chunk_shape[0], sh.chunk_shape[0], key)


def copy_from_file(lay: PlainLayout, src: str | os.PathLike, start: int, end: int) -> None:
    """Fill a new array of a local store with bytes ``start..end`` of ``src`` (the tensor's
    data in a safetensors file: C order, little endian, the layout Zarr's ``bytes`` codec
    writes), piece by piece through one reused buffer (``_copy_range``), never whole.

    Each shard file is its inner chunks in row order (the last one zero-padded to a full
    chunk, as Zarr pads edge chunks) followed by the index; chunks past the array's end are
    marked empty.
    """
    shape, row_bytes = lay.shape, lay.row_bytes
    if end - start != row_bytes * shape[0]:
        raise ValueError(f"{src}: {end - start} data bytes for a tensor of shape {shape}")
    if not lay.shard_rows:
        _copy_range(src, start, end - start, _new_file(lay.file(0)))
        return
    import google_crc32c

    chunk_bytes = lay.chunk_rows * row_bytes
    for s, r0 in enumerate(range(0, shape[0], lay.shard_rows)):
        rows = min(lay.shard_rows, shape[0] - r0)
        used = math.ceil(rows / lay.chunk_rows)
        index = np.full((lay.per_shard, 2), _U64_MAX, dtype="<u8")
        index[:used, 0] = np.arange(used, dtype=np.uint64) * chunk_bytes
        index[:used, 1] = chunk_bytes
        raw = index.tobytes()
        # the last inner chunk padded with zeros, then the index and its checksum
        tail = bytes(used * chunk_bytes - rows * row_bytes) + raw + np.uint32(google_crc32c.value(raw)).astype("<u4").tobytes()
        _copy_range(src, start + r0 * row_bytes, rows * row_bytes,
                    _new_file(lay.file(s)), tail)


class RowFiles:
    """Row blocks of one ``PlainLayout`` array read straight from its files (``os.preadv`` into
    the caller's buffer): what a Zarr read of the same rows returns, without the ~1 ms of
    Python that each Zarr read costs, which the model-Gram pass pays N²·m·n·8/budget times.
    Shard indexes are read and checked (CRC32C) once. ``read`` returns False, having read
    nothing it could not read exactly, for anything it does not cover: a missing file or an
    empty chunk (Zarr then fills in the fill value), a bad index."""

    def __init__(self, layout: PlainLayout):
        self.lay = layout
        self._index: dict[int, np.ndarray | None] = {}

    def _shard_index(self, s: int, fd: int) -> np.ndarray | None:
        if s not in self._index:
            import google_crc32c

            lay, want = self.lay, self.lay.index_bytes()
            size = os.fstat(fd).st_size
            raw = os.pread(fd, want, size - want) if size >= want else b""
            ok = len(raw) == want and google_crc32c.value(raw[:-4]) == int(np.frombuffer(raw[-4:], "<u4")[0])
            index = np.frombuffer(raw[:-4], "<u8").reshape(-1, 2) if ok else None
            used = -(-min(lay.shard_rows, lay.shape[0] - s * lay.shard_rows) // lay.chunk_rows)
            if index is not None and (np.any(index[:used, 1] != lay.chunk_rows * lay.row_bytes)
                                      or np.any(index[:used, 0] + index[:used, 1] > size - want)):
                index = None  # an empty or compressed chunk: not a plain read
            self._index[s] = index
        return self._index[s]

    def read(self, rows: range, out: memoryview) -> bool:
        """Fill ``out`` (bytes of rows ``rows``, C order) from the files; False if not covered."""
        lay = self.lay
        shard_rows = lay.shard_rows or lay.shape[0]
        r = rows.start
        while r < rows.stop:
            s = r // shard_rows
            stop = min(rows.stop, (s + 1) * shard_rows)
            try:
                fd = os.open(lay.file(s), os.O_RDONLY)
            except OSError:
                return False
            try:
                if lay.shard_rows:
                    index = self._shard_index(s, fd)
                    if index is None:
                        return False
                    pieces, q = [], r
                    while q < stop:  # inner chunks of this shard overlapping the rows
                        c = (q - s * shard_rows) // lay.chunk_rows
                        c_stop = min(stop, s * shard_rows + (c + 1) * lay.chunk_rows)
                        first = q - s * shard_rows - c * lay.chunk_rows
                        pieces.append((int(index[c, 0]) + first * lay.row_bytes, q, c_stop))
                        q = c_stop
                else:
                    pieces = [(r * lay.row_bytes, r, stop)]
                for offset, a, b in pieces:
                    view = out[(a - rows.start) * lay.row_bytes:(b - rows.start) * lay.row_bytes]
                    if os.preadv(fd, [view], offset) != len(view):
                        return False
            finally:
                os.close(fd)
            r = stop
        return True


def _new_file(path: str) -> str:
    """``path``, its folder made (chunk keys with ``/`` nest)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


_COPY_BUFFER = threading.local()  # one 8 MB buffer per thread, made on first use


def _copy_range(src: str | os.PathLike, offset: int, nbytes: int, dst: str, tail: bytes = b"") -> None:
    """Copy ``nbytes`` of ``src`` from ``offset`` into a new file ``dst`` through one reused
    8 MB buffer, then append ``tail``. (Plain reads and writes: from the unaligned offsets of
    tensors in a safetensors file they ran 1.5× faster here than ``os.copy_file_range`` or
    ``sendfile``, which splice whole pages.)"""
    buf = getattr(_COPY_BUFFER, "view", None)
    if buf is None:
        buf = _COPY_BUFFER.view = memoryview(bytearray(8 << 20))
    with open(src, "rb", buffering=0) as fi, open(dst, "wb", buffering=0) as fo:
        pos, end = offset, offset + nbytes
        while pos < end:
            got = os.preadv(fi.fileno(), [buf[:min(len(buf), end - pos)]], pos)
            if got == 0:
                raise EOFError(f"{src} ends before byte {end}")
            _write_all(fo.fileno(), buf[:got])
            pos += got
        _write_all(fo.fileno(), memoryview(tail))


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data):]


def source_dtype(arr: zarr.Array) -> str:
    """The tensor's dtype in the source checkpoint ('bfloat16', 'float32', ...)."""
    return arr.attrs.get("dtype", str(arr.dtype))


def to_torch(data: np.ndarray, dtype: str) -> torch.Tensor:
    """Numpy data read from a store back to a torch tensor of the source dtype."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(data).reshape(np.shape(data)))  # a 0-D tensor stays 0-D
    if dtype == "bfloat16":
        return t.view(torch.bfloat16)
    return t


class ModelStore:
    """Read access to one model's Zarr store."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self.group = zarr.open_group(self.path, mode="r")
        self.attrs = dict(self.group.attrs)
        self._arrays: dict[str, zarr.Array] = {}
        self._files: dict[str, RowFiles | None] = {}
        self._names: list[str] | None = None

    def array(self, name: str) -> zarr.Array:
        """The Zarr array of a tensor (opened once: a store is read-only once written)."""
        if name not in self._arrays:
            self._arrays[name] = self.group[name]
        return self._arrays[name]

    @property
    def key(self) -> str:
        return self.attrs.get("model", os.path.basename(self.path).removesuffix(".zarr"))

    def names(self) -> list[str]:
        """The tensor names, sorted (listed once: each listing opens every array's metadata)."""
        if self._names is None:
            self._names = sorted(self.group.array_keys())
        return list(self._names)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.array(name).shape)

    def dtype(self, name: str) -> str:
        return source_dtype(self.array(name))

    def read(self, name: str, rows: slice | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
        """The tensor (or a row block of it) in its source dtype. ``out``: a contiguous CPU
        tensor of the stored dtype and as many elements, filled in place (no new buffer) and
        returned reshaped; otherwise ignored."""
        arr = self.array(name)
        plain_rows = rows is None or rows.step in (None, 1)
        if out is None and arr.ndim > 0 and arr.dtype.kind in "fiu" and plain_rows:  # a new buffer, same path
            import torch

            span = range(*(rows or slice(None)).indices(arr.shape[0]))
            buf = torch.from_numpy(np.empty((len(span),) + tuple(arr.shape[1:]), dtype=arr.dtype))
            data = self.read(name, slice(span.start, span.stop, span.step), out=buf)
            return data.view(torch.bfloat16) if source_dtype(arr) == "bfloat16" else data
        if out is not None and rows is not None and out.is_contiguous() and out.device.type == "cpu":
            span = range(*rows.indices(arr.shape[0]))
            shape = (len(span),) + tuple(arr.shape[1:])
            view = out.numpy() if str(out.dtype) != "torch.bfloat16" else None
            if view is not None and view.dtype == arr.dtype and view.size == math.prod(shape):
                if name not in self._files:
                    lay = plain_layout(arr)
                    self._files[name] = RowFiles(lay) if lay is not None else None
                files = self._files[name]
                if span.step != 1 or files is None or not files.read(span, memoryview(view).cast("B")):
                    from zarr.core.buffer.cpu import NDBuffer

                    arr.get_basic_selection((rows,), out=NDBuffer.from_numpy_array(view.reshape(shape)))
                return out.view(shape)
        data = arr[rows] if rows is not None else arr[...]
        return to_torch(np.asarray(data), source_dtype(arr))

    def nbytes(self, name: str) -> int:
        arr = self.array(name)
        return int(np.prod(arr.shape, dtype=np.int64)) * arr.dtype.itemsize


def write_store(path: str | os.PathLike, tensors, attrs: dict[str, Any], model: str = "?",
                block_bytes: int = BLOCK_BYTES) -> None:
    """Write a whole store at ``path`` from an iterable of (name, tensor or lazy slice) pairs.

    ``tensors`` may be a generator of lazy slices, so at most one tensor (or one block of a
    tensor larger than ``block_bytes``) is in memory at a time; in-memory tensors are
    converted up to four ahead.
    """
    from .stream import prefetched

    group = zarr.open_group(str(path), mode="w", zarr_format=3,
                            attributes={**attrs, "weightspace_store_format": FORMAT})  # one metadata write
    made: dict[tuple, tuple[bytes, PlainLayout]] = {}  # (shape, dtype) → zarr.json, layout

    def make(item):
        """The array for one tensor. One whose bytes come from a file and whose shape and
        dtype repeat an earlier one's gets a copy of that array's zarr.json (Zarr's own
        bytes; array metadata holds no name): ~0.1 ms instead of ~1.5 ms of Zarr per array,
        most of the cost of a ViT-B's 200 small tensors."""
        name, tensor = item
        lazy = _is_reader(tensor) and hasattr(tensor, "path")
        key = (tuple(tensor.get_shape()), tensor.get_dtype()) if lazy else None
        if key in made:
            check_tensor_name(name, model)
            meta, lay = made[key]
            root = os.path.join(os.path.dirname(lay.root), name)
            os.mkdir(root)
            with open(os.path.join(root, "zarr.json"), "wb") as f:
                f.write(meta)
            return None, tensor, None, dataclasses.replace(lay, root=root)
        arr, tensor, data = create_array(group, name, tensor, model, block_bytes)
        lay = plain_layout(arr)
        if lazy and lay is not None:  # a safe tensor name has no '/': the array is the group's child
            with open(os.path.join(lay.root, "zarr.json"), "rb") as f:
                made[key] = (f.read(), lay)
        return arr, tensor, data, lay

    # the next arrays' metadata (Python, small files) is written in a thread while this
    # tensor's bytes are copied (file reads and writes release the GIL)
    for arr, tensor, data, lay in prefetched(tensors, make, depth=4):
        fill_array(arr, tensor, data, lay)
