r"""Evaluation: how much of each model survives projection, beside the baselines.

For every model (basis and held-out), every k of the sweep and every method of
:mod:`weightspace.project` (``projected``, ``mean``, ``random``, ``svd``), plus ``original``
(and ``base_only`` for adapters: the frozen base without any adapter):

- ``rel_error``          = ‖Ŵ − W‖_F / ‖W‖_F over all targets of the view together;
- ``rel_error_centered`` = ‖Ŵ − W‖_F / ‖W − μ‖_F, the part of the model the mean does not
  already explain (1 for ``mean``);
- ``accuracy`` on the model's own task, from the collection's evaluator;
- memory: bytes of (shared mean + basis + all models' coefficients and kept tensors) over the
  bytes of the original models, in the source dtype (``compression``).

An adapter is evaluated in the model it adapts: W_base + s·B̂·Â (factors view) or
W_base + ΔŴ (delta view), with the tensors it replaces outright (PEFT ``modules_to_save``, e.g.
a classifier head) taken from the adapter as they are.

Evaluators (:mod:`weightspace.evaluators`): ``zoo``, ``none``, and the transformers ones
(text-classification, image-classification, causal-lm).
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import torch
import zarr
from tqdm import tqdm

from . import layers, zoo
from .core.hosvd import dense
from .project import (METHODS, baseline, per_model_numbers, projection, shared_numbers, svd_rank,
                      truncated_svd)
from .store import ModelStore

ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}


def _module_weight_name(module: str) -> str:
    return module.removeprefix(zoo.PEFT_PREFIX) + ".weight"


def _base_name(adapter_tensor: str) -> str:
    """The base model's name of a tensor an adapter replaces (PEFT modules_to_save)."""
    return adapter_tensor.removeprefix(zoo.PEFT_PREFIX).replace(".modules_to_save.default.", ".")


def effective_weights(view: str, store: ModelStore, mats: dict[str, torch.Tensor],
                      base: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """The weights a forward pass uses, given the view's (reconstructed) target matrices. An
    adapter's unchanged base tensors are the base's own objects (not copies), so an evaluator
    can tell which tensors changed by identity."""
    kept = {n: store.read(n).double() for n in layers.kept_tensors(store, view)}
    if view == "full":
        shapes = {n: store.shape(n) for n in mats}
        return {**kept, **{n: M.reshape(shapes[n]) for n, M in mats.items()}}
    if base is None:
        raise ValueError(f"model {store.key}: an adapter is evaluated inside its base model, and this "
                         "collection has none (set evaluation.base)")
    out = dict(base)
    for n, t in kept.items():  # tensors the adapter replaces outright (a classifier head)
        if _base_name(n) not in out:
            raise ValueError(f"model {store.key}: adapter tensor {n} has no counterpart in the base")
        out[_base_name(n)] = t
    cfg = store.attrs.get("adapter_config") or {}
    if view == "factors":
        for module, (a, b) in layers.lora_pairs(store.names()).items():
            dW = layers.lora_scale(cfg, module) * (mats[b] @ mats[a])
            out[_module_weight_name(module)] = out[_module_weight_name(module)] + dW
    elif view == "delta":
        for module, dW in mats.items():
            out[_module_weight_name(module)] = out[_module_weight_name(module)] + dW
    return out


def model_config(store: ModelStore) -> dict:
    return store.attrs.get("adapter_config") or store.attrs.get("config") or {}


def evaluate_models(store_paths: list[str], subspaces: dict, coeff_path: str, view: str,
                    ks: list[int], evaluator, splits: dict[str, str], seed: int = 0) -> pd.DataFrame:
    """One row per (model, method, k): errors and task metrics (see the module docstring)."""
    coeffs = zarr.open_group(coeff_path, mode="r")
    index = {k: i for i, k in enumerate(coeffs.attrs["models"])}
    names = sorted(subspaces)
    base = evaluator.base_weights() if view in ("factors", "delta") else None
    scored = getattr(evaluator, "scores", True) and (base is not None or view == "full")
    rows = []
    for path in tqdm(store_paths, desc="evaluate", mininterval=5):
        st = ModelStore(path)
        cfg, tmap = model_config(st), {t.name: t for t in layers.targets(st, view)}
        W = {n: layers.read_target(st, tmap[n]) for n in names}
        W = {n: dense(w) for n, w in W.items()}
        norm2 = sum(float((w ** 2).sum()) for w in W.values())
        cnorm2 = sum(float(((W[n] - subspaces[n].mean) ** 2).sum()) for n in names)
        C = {n: torch.from_numpy(np.asarray(coeffs[n][index[st.key]])).to(torch.float64) for n in names}
        svds = {n: torch.linalg.svd(W[n] - subspaces[n].mean, full_matrices=False) for n in names}

        def record(method, k, mats):
            err2 = sum(float(((mats[n] - W[n]) ** 2).sum()) for n in names)
            score = (evaluator.score(cfg, effective_weights(view, st, mats, base)) if scored
                     else {"accuracy": float("nan")})
            rows.append({"model": st.key, "split": splits.get(st.key, "?"), "method": method,
                         "k": k, "rel_error": (err2 / norm2) ** 0.5 if norm2 > 0 else float("nan"),
                         "rel_error_centered": (err2 / cnorm2) ** 0.5 if cnorm2 > 0 else float("nan"),
                         "metric": evaluator.metric, **score})

        record("original", np.nan, W)
        if base is not None:
            score = evaluator.score(cfg, base)
            rows.append({"model": st.key, "split": splits.get(st.key, "?"), "method": "base_only",
                         "k": np.nan, "rel_error": 1.0, "rel_error_centered": float("nan"),
                         "metric": evaluator.metric, **score})
        for k in ks:
            for method in METHODS:
                mats = {}
                for n in names:
                    sub = subspaces[n]
                    if method == "projected":
                        mats[n] = projection(C[n], sub, k)
                    elif method == "svd":
                        r = svd_rank(k, *sub.shape)
                        mats[n] = sub.mean + truncated_svd(W[n] - sub.mean, r, svds[n])
                    else:
                        mats[n] = baseline(method, W[n], sub.mean, k,
                                           seed=seed + zlib.crc32(n.encode()) + 1000 * k)
                record(method, k, mats)
    return pd.DataFrame(rows)


def original_bytes(store: ModelStore, view: str) -> int:
    """Bytes of a model's tensors the view covers (its analysed matrices and the kept ones),
    in their source dtype: what a compressed model stands for."""
    kept = sum(store.nbytes(n) for n in layers.kept_tensors(store, view))
    return kept + sum(store.nbytes(s) for t in layers.targets(store, view) for s in t.sources)


def compression_table(store: ModelStore, subspaces: dict, view: str, ks: list[int], n_models: int) -> pd.DataFrame:
    """Bytes of each method at each k over the bytes of the original ``n_models`` models.

    shared = Σ_targets shared numbers · itemsize; per model = Σ_targets per-model numbers ·
    itemsize + kept tensors; ratio = (shared + N · per model) / (N · original per model).
    """
    tmap = {t.name: t for t in layers.targets(store, view)}
    kept = sum(store.nbytes(n) for n in layers.kept_tensors(store, view))
    original = original_bytes(store, view)
    rows = []
    for k in ks:
        for method in METHODS:
            shared = per_model = 0
            for name, sub in subspaces.items():
                m, n = sub.shape
                size = ITEMSIZE.get(store.dtype(tmap[name].sources[0]), 4)
                shared += shared_numbers(method, k, m, n) * size
                per_model += per_model_numbers(method, k, m, n) * size
            per_model += kept
            rows.append({"method": method, "k": k, "shared_bytes": shared, "per_model_bytes": per_model,
                         "original_bytes_per_model": original, "n_models": n_models,
                         "compression": (shared + n_models * per_model) / (n_models * original)})
    rows.append({"method": "original", "k": np.nan, "shared_bytes": 0, "per_model_bytes": original,
                 "original_bytes_per_model": original, "n_models": n_models, "compression": 1.0})
    return pd.DataFrame(rows)
