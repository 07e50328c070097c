"""Model folders and the matrices the decomposition sees.

A model folder is laid out as on the Hugging Face Hub: ``*.safetensors`` (optionally sharded
with ``model.safetensors.index.json``) plus ``config.json``, or a PEFT LoRA adapter
(``adapter_model.safetensors`` + ``adapter_config.json``). Only safetensors are read: a folder
that has only pickle checkpoints is refused, never unpickled.

Views (what one subspace is computed over):

- ``full``: every tensor with two or more dimensions, as a matrix m×n (a conv kernel
  out×in×kh×kw as out×(in·kh·kw)); one-dimensional tensors (biases, norms) are kept per model.
- ``factors`` (LoRA): A (r×n) and B (m×r) as separate tensors, the paper's convention.
- ``delta`` (LoRA): ΔW = s·B·A with s = lora_alpha/r (lora_alpha/√r with rsLoRA), what the
  adapter does to the base weight; handled as the low-rank pair, never m×n per model.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from collections.abc import Iterator

from .core.lowrank import LowRank

if TYPE_CHECKING:  # torch is imported where tensors are made: the manifest step needs none
    import numpy as np
    import torch

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
VIEWS = ("full", "factors", "delta")
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<which>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")


class ModelFormatError(ValueError):
    """A model folder that weightspace cannot or will not read."""


def weight_files(folder: str | os.PathLike, model: str = "?") -> list[Path]:
    """The safetensors files of a model folder, in a stable order.

    A sharded checkpoint is read through its ``*.safetensors.index.json`` weight map. A
    folder with only pickle checkpoints raises ModelFormatError (they are never loaded).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFormatError(f"model {model}: folder {folder} does not exist")
    indexes = sorted(folder.glob("*.safetensors.index.json"))
    if indexes:
        weight_map = json.loads(indexes[0].read_text())["weight_map"]
        files = []
        for name in sorted(set(weight_map.values())):
            if "/" in name or "\\" in name or name.startswith("."):
                raise ModelFormatError(f"model {model}: index names an unsafe file {name!r}")
            files.append(folder / name)
        missing = [f.name for f in files if not f.exists()]
        if missing:
            raise ModelFormatError(f"model {model}: shards missing from {folder}: {missing}")
        return files
    files = sorted(folder.glob("*.safetensors"))
    if files:
        return files
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ModelFormatError(
            f"model {model}: only pickle checkpoints {pickles}; weightspace loads safetensors "
            "only and never unpickles (convert the checkpoint to safetensors first)")
    raise ModelFormatError(f"model {model}: no *.safetensors file in {folder}")


def read_json(folder: str | os.PathLike, name: str) -> dict | None:
    """A JSON file of a model folder (None when absent); one that cannot be read or parsed
    raises ModelFormatError naming the file and the problem."""
    path = Path(folder) / name
    if not path.exists() and not path.is_symlink():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path}: cannot be read as JSON ({type(exc).__name__}: {exc})") from None


def model_format(folder: str | os.PathLike) -> str:
    """'lora' for a PEFT LoRA adapter folder, else 'full'."""
    cfg = read_json(folder, "adapter_config.json")
    if cfg is not None:
        if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
            raise ModelFormatError(f"{folder}: PEFT type {cfg.get('peft_type')!r} is not LoRA")
        return "lora"
    return "full"


class RowReader:
    """Lazy access to one tensor of a safetensors file: ``get_shape()``, ``get_dtype()`` and
    ``reader[a:b]`` (rows a..b) or ``reader[...]`` (all), like safetensors' ``get_slice``, but
    reading (seek + readinto) into a fresh buffer instead of mapping the file: copying a tensor
    block by block then holds one block in memory, not the mapped pages of the whole file."""

    _TORCH = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",  # = ITEMSIZE's
              "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
              "BOOL": "bool"}

    def __init__(self, path: Path, shape: list[int], dtype: str, start: int, end: int, model: str):
        if dtype not in self._TORCH:
            raise ModelFormatError(f"model {model}: {path.name} has unsupported dtype {dtype}")
        self.path, self.shape, self.dtype, self.start, self.end = path, shape, dtype, start, end

    def get_shape(self) -> list[int]:
        return list(self.shape)

    def get_dtype(self) -> str:
        return self.dtype

    @property
    def torch_dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, self._TORCH[self.dtype])

    def _read(self, idx) -> tuple[bytearray, list[int]]:
        rows = self.shape[0] if self.shape else 1
        a, b = (0, rows) if idx is Ellipsis else idx.indices(rows)[:2]
        row_bytes = (self.end - self.start) // max(rows, 1)
        buf = bytearray((b - a) * row_bytes)
        with open(self.path, "rb") as f:
            f.seek(self.start + a * row_bytes)
            f.readinto(buf)
        return buf, [b - a] + self.shape[1:] if self.shape else []

    def __getitem__(self, idx) -> torch.Tensor:
        import torch

        buf, shape = self._read(idx)
        dtype = self.torch_dtype
        flat = torch.frombuffer(buf, dtype=dtype) if buf else torch.empty(0, dtype=dtype)
        return flat.reshape(shape)

    def numpy(self, idx) -> np.ndarray:
        """Rows as numpy without torch (bfloat16 as its uint16 bits, as the stores keep it)."""
        import numpy as np

        from .store import NUMPY_DTYPE

        buf, shape = self._read(idx)
        return np.frombuffer(buf, dtype=NUMPY_DTYPE[self.dtype]).reshape(shape)


def iter_slices(folder: str | os.PathLike, model: str = "?") -> Iterator[tuple[str, RowReader]]:
    """Yield (name, RowReader) for every tensor of the folder's safetensors files (headers
    checked for corruption and truncation first), so a huge tensor can be copied one row block
    at a time."""
    seen: set[str] = set()
    for path in weight_files(folder, model):
        for name, (shape, dtype, start, end) in _safetensors_header(path, model, offsets=True).items():
            if name in seen:
                raise ModelFormatError(f"model {model}: tensor {name} appears twice")
            seen.add(name)
            yield name, RowReader(path, shape, dtype, start, end, model)


def iter_tensors(folder: str | os.PathLike, model: str = "?") -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, tensor) one at a time in the source dtype (bounded memory)."""
    from safetensors import safe_open

    seen: set[str] = set()
    for path in weight_files(folder, model):
        try:
            with safe_open(str(path), framework="pt") as f:
                for name in f.keys():
                    if name in seen:
                        raise ModelFormatError(f"model {model}: tensor {name} appears twice")
                    seen.add(name)
                    yield name, f.get_tensor(name)
        except ModelFormatError:
            raise
        except Exception as exc:  # safetensors raises its own error types for bad headers
            raise ModelFormatError(f"model {model}: cannot read {path.name}: {exc}") from exc


def as_matrix(t: torch.Tensor) -> torch.Tensor:
    """A weight tensor as the m×n matrix the decomposition uses (conv: out×(in·kh·kw))."""
    if t.ndim < 2:
        raise ValueError(f"a {t.ndim}-D tensor has no matrix view")
    return t.reshape(t.shape[0], -1)


def lora_scale(adapter_config: dict, module: str) -> float:
    """s in ΔW = s·B·A: lora_alpha / r, or lora_alpha / √r with use_rslora.

    Per-module ``rank_pattern`` / ``alpha_pattern`` entries (matched as a suffix of the module
    name, as PEFT does) override the defaults.
    """
    r = adapter_config.get("r", 8)
    alpha = adapter_config.get("lora_alpha", r)
    for pattern, value in (adapter_config.get("rank_pattern") or {}).items():
        if re.search(rf"(^|\.){pattern}$", module):
            r = value
    for pattern, value in (adapter_config.get("alpha_pattern") or {}).items():
        if re.search(rf"(^|\.){pattern}$", module):
            alpha = value
    return alpha / math.sqrt(r) if adapter_config.get("use_rslora") else alpha / r


def lora_pairs(names: list[str]) -> dict[str, tuple[str, str]]:
    """Map module name → (A tensor name, B tensor name) for PEFT LoRA tensor names."""
    found: dict[str, dict[str, str]] = {}
    for name in names:
        m = _LORA_KEY.match(name)
        if m:
            found.setdefault(m["module"], {})[m["which"]] = name
    broken = sorted(mod for mod, ab in found.items() if len(ab) != 2)
    if broken:
        raise ModelFormatError(f"LoRA modules without both A and B: {broken}")
    return {mod: (ab["A"], ab["B"]) for mod, ab in sorted(found.items())}


@dataclass(frozen=True)
class Target:
    """One matrix that gets its own subspace: a name, its view, its m×n shape and sources.

    ``sources`` are tensor names in the model store: one for ``full`` and ``factors``
    targets, (A, B) for a ``delta`` target.
    """

    name: str
    view: str
    shape: tuple[int, int]
    sources: tuple[str, ...]




def depth_key(name: str) -> tuple:
    """A tensor name's place in the model: numbers compared as numbers (``layer.2`` before
    ``layer.10``, ``fc2`` before ``fc10``), the rest as text. Safetensors files keep no order of
    their own (their header is sorted by name), so this natural order is the model's order as
    far as the names tell it: depth first, then the module names within a block."""
    import re

    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part)
                 for part in re.split(r"(\d+)", name) if part)


def targets(store, view: str) -> list[Target]:
    """The matrices of one view in a model store (see the module docstring)."""
    names = store.names()
    if view == "full":
        out = []
        for n in names:
            shape = store.shape(n)
            if len(shape) >= 2:
                out.append(Target(n, view, (shape[0], math.prod(shape[1:])), (n,)))
        return out
    pairs = lora_pairs(names)
    if not pairs:
        raise ModelFormatError(f"model {store.key}: view {view!r} needs LoRA tensors, found none")
    if view == "factors":
        out = []
        for a, b in pairs.values():
            for n in (a, b):
                shape = store.shape(n)
                out.append(Target(n, view, (shape[0], math.prod(shape[1:])), (n,)))
        return sorted(out, key=lambda t: t.name)
    if view == "delta":
        out = []
        for module, (a, b) in pairs.items():
            out.append(Target(module, view, (store.shape(b)[0], store.shape(a)[1]), (a, b)))
        return out
    raise ValueError(f"unknown view {view!r}; expected one of {VIEWS}")


def kept_tensors(store, view: str) -> list[str]:
    """Tensors a compressed model keeps as they are (not part of any target of the view)."""
    used = {s for t in targets(store, view) for s in t.sources}
    return [n for n in store.names() if n not in used]


SOURCE_DTYPE = "source"  # read_target(dtype=SOURCE_DTYPE): keep the stored dtype


def read_target(store, target: Target, dtype=None):
    """One model's matrix for ``target`` on the CPU: a dense tensor, or LowRank for a delta
    target; in float64 unless ``dtype`` (SOURCE_DTYPE keeps the stored dtype)."""
    import torch

    if target.view == "delta":
        a, b = target.sources
        cfg = store.attrs.get("adapter_config") or {}
        W = LowRank(as_matrix(store.read(b)), as_matrix(store.read(a)), lora_scale(cfg, target.name))
    else:
        W = as_matrix(store.read(target.sources[0]))
    if dtype == SOURCE_DTYPE:
        return W
    dtype = dtype or torch.float64
    if isinstance(W, LowRank):
        return LowRank(W.B.to(dtype=dtype), W.A.to(dtype=dtype), W.scale)
    return W.to(dtype=dtype)


def manifest(folder: str | os.PathLike, model: str = "?") -> dict:
    """Describe a model folder: files (bytes, sha256), tensors (shape, dtype), format, configs.

    Every safetensors header is parsed and every file's size checked against its header, so a
    corrupt or truncated file is found here. A folder that cannot be used yields
    ``status: rejected`` with the reason (pickle-only weights are never opened).
    """
    import hashlib

    folder = Path(folder)
    try:
        files = weight_files(folder, model)
        fmt = model_format(folder)
        tensors = {}
        for path in files:
            header = _safetensors_header(path, model, offsets=True)
            bad = nonfinite_tensors(path, header)
            if bad:
                raise ModelFormatError(f"model {model}: {path.name}: tensor {bad[0]} holds NaN or Inf values"
                                       + (f" (and {len(bad) - 1} more tensors)" if len(bad) > 1 else ""))
            empty = [k for k, v in header.items() if 0 in v[0]]
            if empty:
                raise ModelFormatError(f"model {model}: {path.name}: tensor {empty[0]} has no elements "
                                       f"(shape {list(header[empty[0]][0])}): nothing to analyse")
            tensors.update({k: v[:2] for k, v in header.items()})
        config, adapter_config = read_json(folder, "config.json"), read_json(folder, "adapter_config.json")
    except ModelFormatError as exc:
        reason = str(exc) if model in str(exc) else f"model {model}: {exc}"
        return {"status": "rejected", "reason": reason, "folder": str(folder)}
    except Exception as exc:  # any other failure to describe one model rejects that model only
        return {"status": "rejected", "folder": str(folder),
                "reason": f"model {model}: cannot be described ({type(exc).__name__}: {exc})"}
    described = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                h.update(block)
        described.append({"name": path.name, "bytes": path.stat().st_size, "sha256": h.hexdigest()})
    return {"status": "ok", "reason": "", "folder": str(folder), "format": fmt, "files": described,
            "tensors": tensors, "config": config, "adapter_config": adapter_config}


ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
            "BOOL": 1}  # the safetensors dtypes weightspace reads (float8 kinds are refused, named)
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")


def _safetensors_header(path: Path, model: str, offsets: bool = False) -> dict[str, list]:
    """{name: [shape, dtype]} from a safetensors header, checking its structure against the
    file; with ``offsets``, {name: [shape, dtype, first byte, end byte]} in the file.

    Refused, naming the model, the file and the tensor: a header that is not a JSON object of
    {name: {dtype, shape, data_offsets}}; a dtype weightspace does not read (e.g. float8); a
    tensor name that could be a path; data offsets that do not span shape × itemsize bytes,
    that overlap another tensor's or that run past the end of the file.
    """
    import struct

    from .store import check_tensor_name

    size = path.stat().st_size
    where = f"model {model}: {path.name}"
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelFormatError(f"{where} is truncated (no header)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > 100_000_000:
            raise ModelFormatError(f"{where} is corrupt (header length {n})")
        try:
            header = json.loads(f.read(n))
        except ValueError as exc:
            raise ModelFormatError(f"{where} is corrupt (header: {exc})") from exc
    if not isinstance(header, dict):
        raise ModelFormatError(f"{where}: the header is not a JSON object of tensors")
    end = 8 + n
    out, spans = {}, []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if (not isinstance(info, dict) or not isinstance(info.get("dtype"), str)
                or not isinstance(info.get("shape"), list) or not isinstance(info.get("data_offsets"), list)
                or len(info["data_offsets"]) != 2
                or not all(isinstance(v, int) and v >= 0 for v in info["shape"] + info["data_offsets"])):
            raise ModelFormatError(f"{where}: tensor {name!r} has no valid dtype, shape and data_offsets")
        try:
            check_tensor_name(name, model)
        except ValueError as exc:
            raise ModelFormatError(f"{where}: {exc}") from exc
        dtype, shape, (begin, stop) = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in ITEMSIZE:
            raise ModelFormatError(f"{where}: tensor {name} has unsupported dtype {dtype} "
                                   f"(weightspace reads {', '.join(ITEMSIZE)})")
        want = math.prod(shape) * ITEMSIZE[dtype]
        if stop - begin != want:
            raise ModelFormatError(f"{where}: tensor {name} spans bytes {begin}..{stop} ({stop - begin}) "
                                   f"but its shape {shape} of {dtype} needs {want}")
        spans.append((begin, stop, name))
        out[name] = [shape, dtype] + ([8 + n + begin, 8 + n + stop] if offsets else [])
        end = max(end, 8 + n + stop)
    spans.sort()
    for (b0, s0, n0), (b1, s1, n1) in zip(spans, spans[1:]):
        if b1 < s0:
            raise ModelFormatError(f"{where}: the data of tensors {n0} and {n1} overlap")
    if end > size:
        raise ModelFormatError(f"{where} is truncated ({size} of {end} bytes)")
    return out


def nonfinite_tensors(path: Path, header: dict[str, list], block_bytes: int = 1 << 24) -> list[str]:
    """Names of the float tensors of a safetensors file holding NaN or ±Inf, read in blocks
    (``header`` with offsets; bf16 and f16 checked on their bits: exponent all ones)."""
    import numpy as np

    bad = []
    with open(path, "rb") as f:
        for name, (shape, dtype, begin, stop) in header.items():
            if dtype not in FLOAT_DTYPES:
                continue
            item = ITEMSIZE[dtype]
            step = max(item, block_bytes // item * item)
            f.seek(begin)
            for at in range(begin, stop, step):
                buf = f.read(min(step, stop - at))
                if dtype == "BF16":
                    x = np.frombuffer(buf, dtype="<u2")
                    found = bool(((x & 0x7F80) == 0x7F80).any())
                elif dtype == "F16":
                    x = np.frombuffer(buf, dtype="<u2")
                    found = bool(((x & 0x7C00) == 0x7C00).any())
                else:
                    found = not bool(np.isfinite(np.frombuffer(buf, dtype="<f8" if dtype == "F64" else "<f4")).all())
                if found:
                    bad.append(name)
                    break
    return bad
