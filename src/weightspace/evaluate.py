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

The projected models are scored through the view's bank (``evaluate.bank``, on by default;
:mod:`weightspace.bank`): per k, every model in one mixed-batch pass from one shared basis,
rows of many models in each batch; the per-model path gives the same logits (to 1e-5 in
float32, 1e-12 in the zoo's float64) and the same accuracies (tested).

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

from . import layers
from .assemble import effective_weights, model_config, original_bytes
from .bank import build_bank, read_coefficients
from .core.hosvd import dense
from .project import (METHODS, baseline, gram_factors, per_model_numbers, projection, shared_numbers, svd_rank,
                      truncated_svd)
from .store import ModelStore

ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}


def bank_scores(stores: list[ModelStore], subspaces: dict, coeff_path: str, view: str, ks: list[int],
                evaluator) -> dict[int, dict[str, dict]]:
    """{k: {model: score}} of every projected model, scored through the view's bank at each k
    (``weightspace.bank``: one mixed-batch pass over all models per k) instead of one model at
    a time; the same numbers as the per-model path (tested)."""
    coefs = read_coefficients(coeff_path, [s.key for s in stores], list(subspaces))
    bank = build_bank(stores, subspaces, coefs, view, max(ks), evaluator.bank_dtype)
    out = {}
    for k in tqdm(ks, desc="evaluate through the bank", mininterval=5):
        b = bank.at(k)
        out[k] = dict(zip(b.models, evaluator.score_bank(b)))
    return out


def evaluate_models(store_paths: list[str], subspaces: dict, coeff_path: str, view: str,
                    ks: list[int], evaluator, splits: dict[str, str], seed: int = 0,
                    use_bank: bool | str = "auto") -> pd.DataFrame:
    """One row per (model, method, k): errors and task metrics (see the module docstring). With
    ``use_bank`` (and an evaluator that can; ``auto``: where the evaluator says the bank is
    faster, ``bank_faster``), the projected models are scored through the bank."""
    if use_bank == "auto":
        use_bank = getattr(evaluator, "bank_faster", False)
    coeffs = zarr.open_group(coeff_path, mode="r")
    index = {k: i for i, k in enumerate(coeffs.attrs["models"])}
    names = sorted(subspaces)
    base = evaluator.base_weights() if view in ("factors", "delta") else None
    scored = getattr(evaluator, "scores", True) and (base is not None or view == "full")
    stores = [ModelStore(p) for p in store_paths]
    banked = (bank_scores(stores, subspaces, coeff_path, view, ks, evaluator)
              if use_bank and scored and hasattr(evaluator, "score_bank") and stores else {})
    rows = []
    for st in tqdm(stores, desc="evaluate", mininterval=5):
        cfg, tmap = model_config(st), {t.name: t for t in layers.targets(st, view)}
        W = {n: layers.read_target(st, tmap[n]) for n in names}
        W = {n: dense(w) for n, w in W.items()}
        norm2 = sum(float((w ** 2).sum()) for w in W.values())
        cnorm2 = sum(float(((W[n] - subspaces[n].mean) ** 2).sum()) for n in names)
        C = {n: torch.from_numpy(np.asarray(coeffs[n][index[st.key]])).to(torch.float64) for n in names}
        # the per-model SVD baseline's factors, only where some k stores at least one rank (at
        # svd_rank 0 the baseline is the mean: 64% of this stage's time went to unused eighs)
        svds = {n: gram_factors(W[n] - subspaces[n].mean) for n in names
                if max(svd_rank(k, *subspaces[n].shape) for k in ks) > 0}

        def record(method, k, mats):
            err2 = sum(float(((mats[n] - W[n]) ** 2).sum()) for n in names)
            if method == "projected" and k in banked:
                score = banked[k][st.key]
            else:
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
                        mats[n] = sub.mean + truncated_svd(W[n] - sub.mean, r, svds.get(n))
                    else:
                        mats[n] = baseline(method, W[n], sub.mean, k,
                                           seed=seed + zlib.crc32(n.encode()) + 1000 * k)
                record(method, k, mats)
    return pd.DataFrame(rows)


def compression_table(store: ModelStore, subspaces: dict, view: str, ks: list[int], n_models: int) -> pd.DataFrame:
    """Bytes of each method at each k over the bytes of the original ``n_models`` models.

    shared = Σ_targets shared numbers · itemsize; per model = Σ_targets per-model numbers ·
    itemsize + kept tensors; ratio = (shared + N · per model) / (N · original per model).
    ``saturated``: the targets whose k×k core holds the whole m×n matrix (k ≥ m and k ≥ n), which
    compress nothing at that k (``figures.saturated_ks``: the figures leave such k out).
    """
    tmap = {t.name: t for t in layers.targets(store, view)}
    kept = sum(store.nbytes(n) for n in layers.kept_tensors(store, view))
    original = original_bytes(store, view)
    rows = []
    for k in ks:
        for method in METHODS:
            shared = per_model = saturated = 0
            for name, sub in subspaces.items():
                m, n = sub.shape
                saturated += min(k, m) * min(k, n) >= m * n
                size = ITEMSIZE.get(store.dtype(tmap[name].sources[0]), 4)
                shared += shared_numbers(method, k, m, n) * size
                per_model += per_model_numbers(method, k, m, n) * size
            per_model += kept
            rows.append({"method": method, "k": k, "shared_bytes": shared, "per_model_bytes": per_model,
                         "original_bytes_per_model": original, "n_models": n_models,
                         "compression": (shared + n_models * per_model) / (n_models * original),
                         "saturated": saturated, "targets": len(subspaces)})
    rows.append({"method": "original", "k": np.nan, "shared_bytes": 0, "per_model_bytes": original,
                 "original_bytes_per_model": original, "n_models": n_models, "compression": 1.0,
                 "saturated": 0, "targets": len(subspaces)})
    return pd.DataFrame(rows)


def saturation_warnings(compression: pd.DataFrame, subspaces: dict) -> list[str]:
    """One line per k at which some matrices' k×k cores hold the whole matrix."""
    out = []
    c = compression[(compression["method"] == "projected") & (compression["saturated"] > 0)]
    for k, count in zip(c["k"].astype(int), c["saturated"]):
        names = [n for n, s in subspaces.items() if min(k, s.shape[0]) * min(k, s.shape[1]) >= s.shape[0] * s.shape[1]]
        shown = ", ".join(f"{n} {tuple(subspaces[n].shape)}" for n in names[:3]) + (" …" if len(names) > 3 else "")
        whole = " (every matrix: this k is left out of the compression figure)" if count == len(subspaces) else ""
        out.append(f"k={k} is at or above both dimensions of {count} of {len(subspaces)} matrices ({shown}): "
                   f"their k×k cores hold the whole matrix and compress nothing{whole}")
    return out
