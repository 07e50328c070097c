r"""Projection onto a shared subspace, reconstruction, and the baselines beside it.

With the basis models' mean μ and leading mode factors U_row,k (m×k), U_col,k (n×k):

    C   = U_row,kᵀ (W − μ) U_col,k                  (k_r×k_c coefficients of one model)
    Ŵ   = μ + U_row,k C U_col,kᵀ

with k_r = min(k, m) and k_c = min(k, n) (a mode never has more directions than its size).
The factors are nested, so the coefficients at k are the leading block of those at k_max:
one projection serves the whole sweep of k. Held-out models are projected with the
basis models' μ and U only.

Baselines at the same k (every result is reported beside them):

- ``mean``:   Ŵ = μ (no per-model bytes);
- ``random``: Ŵ = μ + Q_r Q_rᵀ (W − μ) Q_c Q_cᵀ with random orthonormal Q_r (m×k), Q_c (n×k):
  the same per-model bytes (k²) in a subspace that is not learned from the collection;
- ``svd``:    Ŵ = μ + best rank-r approximation of W − μ with r = ⌊k_r·k_c / (m + n)⌋, i.e.
  the per-model truncated SVD that stores no more per-model numbers than the k_r×k_c
  coefficients (r·(m+n) ≤ k_r·k_c; r = 0 reduces to ``mean``).
"""

from __future__ import annotations

import functools

import logging
import math

import torch

from .core.hosvd import dense, random_orthonormal

log = logging.getLogger("weightspace")

METHODS = ("projected", "mean", "random", "svd")


def coefficients(W: torch.Tensor, mean: torch.Tensor, U_row: torch.Tensor, U_col: torch.Tensor) -> torch.Tensor:
    """C = U_rowᵀ (W − μ) U_col."""
    return U_row.T @ (W - mean) @ U_col


def reconstruct(C: torch.Tensor, mean: torch.Tensor, U_row: torch.Tensor, U_col: torch.Tensor) -> torch.Tensor:
    """Ŵ = μ + U_row C U_colᵀ, using the leading C.shape[0] and C.shape[1] columns."""
    kr, kc = C.shape
    return mean + U_row[:, :kr] @ C @ U_col[:, :kc].T


def core_size(k: int, U_row: torch.Tensor, U_col: torch.Tensor) -> tuple[int, int]:
    """(k_r, k_c): the core block used at k, limited by the stored directions per mode."""
    return min(k, U_row.shape[1]), min(k, U_col.shape[1])


def projection(C: torch.Tensor, sub, k: int) -> torch.Tensor:
    """Ŵ at k from a model's stored k_max×k_max coefficients: μ + U_row C_k U_colᵀ with C_k the
    leading ``core_size`` block (``sub``: mean, U_row, U_col)."""
    kr, kc = core_size(k, sub.U_row, sub.U_col)
    return reconstruct(C[:kr, :kc], sub.mean, sub.U_row, sub.U_col)


def svd_rank(k: int, m: int, n: int) -> int:
    """Rank of the per-model SVD that stores no more numbers than the k_r×k_c coefficients."""
    return min(min(k, m) * min(k, n) // (m + n), m, n)


def gram_factors(X: torch.Tensor) -> tuple[str, torch.Tensor]:
    """X's singular vectors on its smaller side, from that side's Gram (eigenvectors of XᵀX when
    X is tall, of XXᵀ when wide), leading first: what ``truncated_svd`` needs for every r, 2-3×
    faster than an SVD (the evaluate stage's baseline did one per model and matrix)."""
    side = "right" if X.shape[0] >= X.shape[1] else "left"
    G = X.T @ X if side == "right" else X @ X.T
    return side, torch.linalg.eigh(G)[1].flip(1)


def truncated_svd(X: torch.Tensor, r: int, factors=None) -> torch.Tensor:
    """Best rank-r approximation of X (Eckart–Young): X projected onto its r leading right
    (or left) singular vectors, X V_r V_rᵀ (or U_r U_rᵀ X). ``factors``: ``gram_factors(X)`` or
    ``torch.linalg.svd(X)`` when the caller already has them (one serves a whole sweep of r)."""
    if r <= 0:
        return torch.zeros_like(X)
    if factors is None:
        factors = gram_factors(X)
    if len(factors) == 3:  # (U, s, Vh) of an SVD
        U, s, Vh = factors
        return (U[:, :r] * s[:r]) @ Vh[:r]
    side, Q = factors
    Q = Q[:, :r]
    return (X @ Q) @ Q.T if side == "right" else Q @ (Q.T @ X)


def random_frames(m: int, n: int, k: int, seed: int, dtype=torch.float64, device="cpu"):
    """The random baseline's subspace for an m×n target at k: Haar frames (m×k, n×k) drawn from
    ``seed``, one fixed subspace per (target, k) shared by every model. Small frames (up to
    FRAME_CACHE_NUMBERS numbers, 0.5 MB) are drawn once and cached, so a collection of small
    models draws them once, not once per model; the cache holds at most 256 of them (128 MB)."""
    if (m + n) * k <= FRAME_CACHE_NUMBERS:
        return _cached_frames(m, n, k, seed, dtype, device)
    return _draw_frames(m, n, k, seed, dtype, device)


FRAME_CACHE_NUMBERS = 1 << 16


def _draw_frames(m, n, k, seed, dtype, device):
    g = torch.Generator().manual_seed(seed)
    return (random_orthonormal(m, min(k, m), g, dtype=dtype, device=device),
            random_orthonormal(n, min(k, n), g, dtype=dtype, device=device))


_cached_frames = functools.lru_cache(maxsize=256)(_draw_frames)


def baseline(method: str, W: torch.Tensor, mean: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """Reconstruction of W by a baseline at k (see the module docstring)."""
    m, n = W.shape
    if method == "mean":
        return mean.clone()
    if method == "random":
        Qr, Qc = random_frames(m, n, k, seed, W.dtype, W.device)
        return mean + Qr @ (Qr.T @ (W - mean) @ Qc) @ Qc.T
    if method == "svd":
        return mean + truncated_svd(W - mean, svd_rank(k, m, n))
    raise ValueError(f"unknown baseline {method!r}")


def per_model_numbers(method: str, k: int, m: int, n: int) -> int:
    """Numbers stored per model for one m×n target at k."""
    core = min(k, m) * min(k, n)
    return {"projected": core, "random": core, "mean": 0,
            "svd": svd_rank(k, m, n) * (m + n)}[method]


def shared_numbers(method: str, k: int, m: int, n: int) -> int:
    """Numbers stored once for the collection for one m×n target at k (mean + basis).

    The random baseline's basis is regenerated from its seed, so only the mean is stored.
    """
    return m * n + ((m * min(k, m) + n * min(k, n)) if method == "projected" else 0)


# ----------------------------------------------------------------------------- the stage
def project_models(store_paths: list[str], subspaces: dict, view: str, out_path: str, ks: list[int],
                   splits: dict[str, str]):
    """Coefficients of every model (basis and held-out) at k_max, and the captured energy.

    Writes ``out_path`` (Zarr: one array N×k_max×k_max per target, attribute ``models``) and
    returns a table of the fraction of each model's centred energy that the k×k core keeps,
    ‖C_k‖² / ‖W − μ‖² (U orthonormal, so ‖U_r C U_cᵀ‖ = ‖C‖), per target and k.
    """
    import pandas as pd
    import zarr
    from tqdm import tqdm

    from . import layers
    from .io import atomic_path
    from .store import ModelStore

    names = sorted(subspaces)
    for name in names:  # a k at a matrix's dimensions keeps a core as large as the matrix itself
        m, n = subspaces[name].shape[0], math.prod(subspaces[name].shape[1:])
        full = [k for k in ks if min(k, m) * min(k, n) >= m * n]
        if full:
            log.warning("%s (%d×%d): at k = %s the k×k core is as large as the matrix: nothing is compressed "
                        "there (the compression table and figures show it as it is)", name, m, n, full)
    coeffs = {n: [] for n in names}
    rows, keys = [], []
    for path in tqdm(store_paths, desc="project", mininterval=5):
        st = ModelStore(path)
        keys.append(st.key)
        tmap = {t.name: t for t in layers.targets(st, view)}
        for name in names:
            sub = subspaces[name]
            if name not in tmap or tmap[name].shape != sub.shape:
                raise ValueError(f"model {st.key}: target {name} missing or of another shape "
                                 f"than the subspace {sub.shape}")
            W = layers.read_target(st, tmap[name])
            X = dense(W) - sub.mean
            C = sub.U_row.T @ X @ sub.U_col
            coeffs[name].append(C.float().cpu())
            total = float((X * X).sum())
            for k in ks:
                kr, kc = core_size(k, sub.U_row, sub.U_col)
                rows.append({"model": st.key, "split": splits.get(st.key, "?"), "target": name, "k": k,
                             "captured": float((C[:kr, :kc] ** 2).sum()) / total if total > 0 else float("nan")})
    with atomic_path(out_path) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        root.attrs.update({"models": keys, "view": view, "targets": names})
        for name in names:
            data = torch.stack(coeffs[name]).numpy()
            root.create_array(name, data=data, chunks=data.shape, compressors=None)
    return pd.DataFrame(rows)
