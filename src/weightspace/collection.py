"""The collection table: one row per model, the lock that every later stage reads.

Columns: ``key`` (the ``{model}`` wildcard: a slug that cannot hold '/' or '..'), ``id``,
``source``, ``revision`` (40 hex characters), ``format`` (full / lora), ``task``, ``split``
(basis / heldout) and ``path`` (the model folder, for zoo and local sources).

The table is written atomically, its rows are never reordered and new models are appended,
so that a rerun sees the same DAG plus the new models. The split of a model is a pure
function of its key and the split config (a hash threshold or an explicit list), so adding
models never moves an existing model between basis and held-out.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pandas as pd

from . import layers, zoo
from .io import write_table

COLUMNS = ["key", "id", "source", "revision", "format", "task", "split", "path"]
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def slugify(model_id: str) -> str:
    """A model id as a safe key: 'org/name' → 'org--name'; anything else odd → '_'."""
    key = re.sub(r"[^A-Za-z0-9_.\-]", "_", model_id.replace("/", "--"))
    key = re.sub(r"\.{2,}", "_", key).strip("._-")
    if not key or ".." in key or not _KEY.match(key):
        raise ValueError(f"model id {model_id!r} gives no safe key")
    return key


def _sha40(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def split_of(key: str, split: dict) -> str:
    """'heldout' if the key is listed in ``split['heldout']`` or, without a list, if its hash
    u(key, seed) ∈ [0, 1) falls below ``split['heldout_fraction']``; else 'basis'."""
    if split.get("heldout"):
        return "heldout" if key in split["heldout"] else "basis"
    digest = hashlib.sha256(f"{split.get('seed', 0)}:{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return "heldout" if u < split.get("heldout_fraction", 0.0) else "basis"


def resolve_zoo(name: str, spec: dict, zoo_dir: str) -> pd.DataFrame:
    """Rows of a zoo collection: known from its config alone (training is deterministic)."""
    rev = _sha40({k: v for k, v in spec.items()})
    fmt = "lora" if spec["kind"] == "lora" else "full"
    rows = [{"key": key, "id": f"zoo/{name}/{key}", "source": "zoo", "revision": rev,
             "format": fmt, "task": task["label"], "path": f"{zoo_dir}/{key}"}
            for key, task in zip(zoo.model_keys(spec), zoo.zoo_tasks(spec))]
    return pd.DataFrame(rows)


def resolve_local(name: str, folder: str) -> pd.DataFrame:
    """Rows of a local collection: one per model folder (a folder with safetensors)."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"collection {name}: local path {folder} is not a folder")
    rows = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(list(sub.glob("*.safetensors")) + list(sub.glob("*.json")))
        if not any(f.suffix == ".safetensors" for f in files):
            continue
        stamp = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
        cfg = layers.read_json(sub, "config.json") or layers.read_json(sub, "adapter_config.json") or {}
        task = (cfg.get("weightspace_task") or {}).get("label", "")
        rows.append({"key": slugify(sub.name), "id": sub.name, "source": "local",
                     "revision": _sha40(stamp), "format": layers.model_format(sub),
                     "task": task, "path": str(sub)})
    if not rows:
        raise ValueError(f"collection {name}: no model folders with safetensors in {folder}")
    return pd.DataFrame(rows)


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def update_lock(path: str | os.PathLike, resolved: pd.DataFrame, split: dict) -> pd.DataFrame:
    """Merge freshly resolved rows into the lock at ``path`` and return the table.

    Existing rows keep their order and pinned revision; rows of new keys are appended; the
    split column follows the split config. The file is rewritten (atomically) only when its
    content changes, so an unchanged rerun does not touch it.
    """
    dup = resolved["key"][resolved["key"].duplicated()].tolist()
    if dup:
        raise ValueError(f"two models map to the same key: {dup}")
    path = Path(path)
    if path.exists():
        table = read_table(path)
        new = resolved[~resolved["key"].isin(table["key"])]
        table = pd.concat([table, new], ignore_index=True)
    else:
        table = resolved.copy()
    table["split"] = [split_of(k, split) for k in table["key"]]
    table = table[COLUMNS].astype(str)
    if table["split"].eq("basis").sum() < 2:
        raise ValueError(f"{path}: fewer than two basis models; check the split config")
    if not path.exists() or not read_table(path).equals(table):
        write_table(table, path)
    return table
