"""The extract stage: a model folder's safetensors into the model's own Zarr store."""

from __future__ import annotations

import hashlib
import json
import logging

from . import layers
from .io import atomic_path
from .store import BLOCK_BYTES, write_store

log = logging.getLogger("weightspace")


def extract_from_manifest(manifest: dict, out_path: str, key: str, row: dict) -> None:
    """Extract the model a manifest describes; a rejected model gets an empty store that
    records why (so the DAG stays static and later stages skip it by the screen table)."""
    if manifest.get("status") != "ok":
        with atomic_path(out_path) as tmp:
            write_store(tmp, [], {"model": key, "id": row.get("id"), "status": "rejected",
                                  "reason": manifest.get("reason", "")}, model=key)
        log.warning("model %s rejected: %s", key, manifest.get("reason"))
        return
    folder = row.get("path") or manifest["folder"]  # a local folder where the lock has it now; the Hub's cache
    extract_model(folder, out_path, key, row, content=content_digest(manifest))


def content_digest(manifest: dict) -> str:
    """A digest of the model's files (names and sha256 from its manifest): with the revision,
    what says whether cached sums of this model are still its own (a zoo or local model can
    change under the same key and lock revision)."""
    files = sorted((f["name"], f["sha256"]) for f in manifest.get("files", []))
    return hashlib.sha256(json.dumps(files).encode()).hexdigest()[:16]


def extract_model(folder: str, out_path: str, key: str, row: dict,
                  block_bytes: int = BLOCK_BYTES, content: str = "") -> None:
    """Copy every tensor of the model folder into ``out_path`` keeping dtypes, with at most one
    tensor (or one ``block_bytes`` row block of a larger one) in memory; the folder's JSON
    configs, the collection row and the content digest become store attributes."""
    fmt = layers.model_format(folder)
    attrs = {"model": key, "id": row.get("id"), "revision": row.get("revision"), "content": content, "format": fmt,
             "config": layers.read_json(folder, "config.json"),
             "adapter_config": layers.read_json(folder, "adapter_config.json")}
    own = "adapter_config" if attrs["adapter_config"] else "config"  # the one evaluators read (assemble.model_config)
    task = (attrs[own] or {}).get("weightspace_task") or {}
    if row.get("task") and task.get("label") != row["task"]:  # a models sheet's task (the lock's) is the model's
        attrs[own] = {**(attrs[own] or {}), "weightspace_task": {**task, "label": row["task"]}}
    count = 0

    def tensors():
        nonlocal count
        for name, t in layers.iter_slices(folder, key):
            count += 1
            yield name, t

    with atomic_path(out_path) as tmp:
        write_store(tmp, tensors(), attrs, model=key, block_bytes=block_bytes)
    log.info("model %s: %d tensors from %s", key, count, folder)
