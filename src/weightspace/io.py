"""Atomic outputs: write to a temporary sibling, rename into place on success.

An interrupted job leaves only ``.tmp-*`` siblings, which no rerun trusts and the next
write of the same target removes. Every output gets the permissions the user's umask gives a
new file (safetensors writes its files 0600), and safetensors files are byte-reproducible
(``write_safetensors``: their metadata in sorted order).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path
from collections.abc import Iterator

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas is imported where a table is written: extract needs none
    import pandas as pd

TMP_PREFIX = ".tmp-"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success rename it onto ``target``.

    Works for files and directories (Zarr stores). On an exception the temporary path is
    removed and ``target`` is left exactly as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f"{TMP_PREFIX}*-{target.name}"):
        _remove(stale)  # left by an earlier, killed writer of the same target
    tmp = target.parent / f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{target.name}"
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    follow_umask(tmp)
    if target.exists() and target.is_dir() and not target.is_symlink():
        old = target.parent / f"{TMP_PREFIX}old-{uuid.uuid4().hex[:8]}-{target.name}"
        os.replace(target, old)
        os.replace(tmp, target)
        _remove(old)
    else:
        os.replace(tmp, target)


def umask() -> int:
    """The process's umask (read from /proc where it can be, so no other thread sees it change)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(path: str | os.PathLike) -> None:
    """Give a written file (or every file and folder under a written folder) the mode a new one
    gets under the umask, 0o666 (folders 0o777) less the mask: libraries that write 0600 files
    (safetensors) would otherwise leave outputs other users of a shared results folder cannot read."""
    path = Path(path)
    mask = umask()
    want_file, want_dir = 0o666 & ~mask, 0o777 & ~mask
    entries = [path] if not path.is_dir() else [path, *path.rglob("*")]
    for p in entries:
        if p.is_symlink():
            continue
        want = want_dir if p.is_dir() else want_file
        if p.stat().st_mode & 0o777 != want:
            os.chmod(p, want)


def write_safetensors(tensors: dict, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """safetensors' ``save_file``, then its header's metadata put in sorted order: safetensors
    writes the metadata map in a per-process random order, so two runs would differ byte for
    byte. The sorted header has the same length (the same keys and values), so it is rewritten
    in place; tensors must be contiguous."""
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=metadata)
    if not metadata or len(metadata) < 2:
        return
    with open(path, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        raw = f.read(n)
        header = json.loads(raw)
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > n:
            raise RuntimeError(f"{path}: the sorted safetensors header is longer than the written one")
        f.seek(8)
        f.write(text + b" " * (n - len(text)))


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a table atomically; the format follows the suffix (.parquet, .csv, .tsv)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        elif path.suffix == ".tsv":
            df.to_csv(tmp, sep="\t", index=False)
        elif path.suffix == ".csv":
            df.to_csv(tmp, index=False)
        else:
            raise ValueError(f"{path}: unknown table format {path.suffix!r} (parquet, csv, tsv)")


def write_json(obj, path: str | os.PathLike) -> None:
    """Write JSON atomically (sorted keys, indented)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def relative_base(base: str, out_dir: str | os.PathLike) -> str:
    """The base model's path as written in an adapter config: relative to the adapter folder
    when the base is a local folder (so the export can be moved with its base), else as given
    (a Hub id)."""
    if base and Path(base).is_dir():
        return os.path.relpath(Path(base).resolve(), Path(out_dir).resolve())
    return base


def folder_bytes(folder: str | os.PathLike) -> int:
    """Tensor bytes of the weight files (``*.safetensors``) under a folder: each file's size
    less its header (8 bytes of length, then the JSON header); configs are not counted."""
    total = 0
    for f in Path(folder).rglob("*.safetensors"):
        with open(f, "rb") as fh:
            header = int.from_bytes(fh.read(8), "little")
        total += f.stat().st_size - 8 - header
    return total
