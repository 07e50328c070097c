"""The subspace stage: stream basis models' matrices, decompose, write, read back.

One job handles one layer group of one view: the view's targets (sorted by name) dealt
round-robin into ``n_groups`` groups, so the DAG is known before any weight is read. For each
target the job streams every basis model's matrix once into the additive sums of
:class:`weightspace.hosvd.ModeSums`, reads row blocks once more for the model-mode Gram
(dense targets), eigendecomposes and writes one Zarr group per target into the job's own
store (one writer per store). Memory: one model's matrix, the sums and a row block.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
import zarr
from tqdm import tqdm

from . import hosvd, layers
from .io import atomic_path
from .store import ModelStore

log = logging.getLogger("weightspace")
BLOCK_BYTES = 256 << 20


class ArchitectureError(ValueError):
    """A model whose targets do not match the collection's reference model."""


def group_targets(store: ModelStore, view: str, n_groups: int, group: int) -> list[layers.Target]:
    """Targets of layer group ``group`` of ``n_groups``: every n_groups-th target by name."""
    all_targets = sorted(layers.targets(store, view), key=lambda t: t.name)
    return all_targets[group::n_groups]


def check_same_targets(ref: ModelStore, other: ModelStore, view: str) -> None:
    a = {t.name: t.shape for t in layers.targets(ref, view)}
    b = {t.name: t.shape for t in layers.targets(other, view)}
    if a != b:
        missing = sorted(set(a) - set(b))
        extra = sorted(set(b) - set(a))
        shapes = sorted(n for n in set(a) & set(b) if a[n] != b[n])
        raise ArchitectureError(
            f"model {other.key} does not match reference model {ref.key} in view {view}: "
            f"missing {missing[:5]}, extra {extra[:5]}, different shapes {shapes[:5]}")


def decompose_target(stores: list[ModelStore], target: layers.Target, *, max_k: int, center: bool,
                     gaussian_null: bool, rotation_null: bool, seed: int, device: str) -> hosvd.Subspace:
    """The decomposition of one target over the given basis models (see hosvd)."""
    m, n = target.shape
    sums = hosvd.ModeSums(m, n, device=device, rotation_seed=seed if rotation_null else None)
    lowrank = []
    for st in tqdm(stores, desc=target.name, mininterval=5):
        W = layers.read_target(st, target, device=device)
        sums.add(W)
        if isinstance(W, layers.LowRank):
            lowrank.append(W)
    if lowrank:
        K = hosvd.model_gram_lowrank(lowrank)
    else:
        rows = max(1, BLOCK_BYTES // (8 * n * len(stores)))

        def read_rows(i, sl):  # a row block of the tensor is a row block of its matrix view
            return layers.as_matrix(stores[i].read(target.sources[0], sl))
        K = hosvd.model_gram_dense(read_rows, len(stores), m, n, rows, device=device)
    sub = hosvd.decompose(sums, K, max_k, center)
    if gaussian_null:
        var = float(sub.eig_row.sum()) / (len(stores) * m * n)
        sub.nulls.update(hosvd.gaussian_null(len(stores), m, n, var, seed, center, device))
    return sub


def write_group(path: str | os.PathLike, results: dict[str, tuple[layers.Target, hosvd.Subspace]],
                attrs: dict) -> None:
    """Write one group's subspaces atomically: a Zarr group per target."""
    with atomic_path(path) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        root.attrs.update({**attrs, "targets": sorted(results)})
        for name, (target, sub) in results.items():
            g = root.create_group(name)
            g.attrs.update({"view": target.view, "shape": list(target.shape),
                            "sources": list(target.sources), "k_max": sub.k_max})
            arrays = {"mean": sub.mean.float(), "U_row": sub.U_row, "U_col": sub.U_col,
                      "eig_row": sub.eig_row, "eig_col": sub.eig_col, "eig_model": sub.eig_model,
                      "gram_model": sub.gram_model, "eig_row_uncentered": sub.eig_row_uncentered,
                      "eig_col_uncentered": sub.eig_col_uncentered,
                      **{f"null_{k}": v for k, v in sub.nulls.items()}}
            for key, value in arrays.items():
                data = value.detach().cpu().numpy()
                g.create_array(key, data=data, chunks=data.shape, compressors=None)


def run_group(store_paths: list[str], view: str, n_groups: int, group: int, out_path: str, *,
              max_k: int, center: bool, gaussian_null: bool, rotation_null: bool, seed: int,
              device: str) -> None:
    """The subspace job: decompose every target of one layer group and write the store."""
    stores = [ModelStore(p) for p in store_paths]
    if len(stores) < 2:
        raise ValueError(f"the subspace needs at least two basis models, got {len(stores)}")
    for st in stores[1:]:
        check_same_targets(stores[0], st, view)
    chosen = group_targets(stores[0], view, n_groups, group)
    log.info("view %s group %d/%d: %d targets over %d basis models on %s",
             view, group, n_groups, len(chosen), len(stores), device)
    results = {}
    for target in chosen:
        sub = decompose_target(stores, target, max_k=max_k, center=center, gaussian_null=gaussian_null,
                               rotation_null=rotation_null, seed=seed, device=device)
        ev = hosvd.explained_variance(sub.eig_row)
        log.info("%s %s: row-mode explained variance at k=1,4,16: %s", target.name, target.shape,
                 [round(float(ev[min(k, len(ev)) - 1]), 3) for k in (1, 4, 16)])
        results[target.name] = (target, sub)
    write_group(out_path, results, {"view": view, "group": group, "n_groups": n_groups,
                                    "models": [s.key for s in stores], "center": center})


class SubspaceRecord:
    """A stored subspace of one target, read back (tensors in float64 on ``device``)."""

    def __init__(self, group: zarr.Group, device="cpu"):
        self.attrs = dict(group.attrs)
        self.shape = tuple(self.attrs["shape"])
        self.sources = tuple(self.attrs["sources"])
        get = lambda k: torch.from_numpy(np.asarray(group[k][...])).to(device, torch.float64)  # noqa: E731
        self.mean, self.U_row, self.U_col = get("mean"), get("U_row"), get("U_col")
        self._group = group

    def array(self, key: str) -> np.ndarray:
        return np.asarray(self._group[key][...])

    def keys(self) -> list[str]:
        return sorted(self._group.array_keys())


def load_subspaces(paths: list[str], device="cpu") -> tuple[dict[str, SubspaceRecord], list[str]]:
    """All targets' subspaces from a view's group stores, and the basis model keys."""
    out, models = {}, None
    for p in paths:
        root = zarr.open_group(str(p), mode="r")
        models = models or list(root.attrs["models"])
        for name in root.attrs["targets"]:
            out[name] = SubspaceRecord(root[name], device)
    return out, models or []


SPECTRA = {  # array in the store → (mode, centred, source)
    "eig_row": ("row", True, "data"), "eig_col": ("col", True, "data"), "eig_model": ("model", True, "data"),
    "eig_row_uncentered": ("row", False, "data"), "eig_col_uncentered": ("col", False, "data"),
    "null_gaussian_row": ("row", True, "Gaussian null"), "null_gaussian_col": ("col", True, "Gaussian null"),
    "null_rotation_row": ("row", False, "rotation null"), "null_rotation_col": ("col", False, "rotation null"),
}


def spectra_table(paths: list[str]) -> "pd.DataFrame":
    """Long table of every stored spectrum: target, mode, centred, source, k, eigenvalue and
    cumulative explained variance at k."""
    import pandas as pd

    subs, _ = load_subspaces(paths)
    frames = []
    for name, rec in subs.items():
        for key in rec.keys():
            if key not in SPECTRA:
                continue
            mode, centered, source = SPECTRA[key]
            lam = torch.from_numpy(rec.array(key))
            frames.append(pd.DataFrame({
                "target": name, "shape": "×".join(map(str, rec.shape)), "mode": mode,
                "centered": centered, "source": source, "k": np.arange(1, len(lam) + 1),
                "eigenvalue": lam.numpy(), "explained": hosvd.explained_variance(lam).numpy()}))
    return pd.concat(frames, ignore_index=True)
