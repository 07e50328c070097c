r"""Transfer statistics: does collection A's subspace explain collection B's models?

For one matrix and one mode (row or column) of dimension d, B's centred basis stack gives the
mode Gram G_B = Σ_i X_i X_iᵀ (X_i = W_i − μ_B; the column mode with X_iᵀ) and A's subspace gives
U_A,k (d×k, orthonormal, A's top-k directions of that mode).

- Captured energy: E_A→B(k) = tr(U_A,kᵀ G_B U_A,k) / tr(G_B), the share of B's centred energy in
  A's directions; B's own top-k capture E_B(k) = Σ_{j≤k} λ_j(G_B) / tr(G_B) ≥ E_A→B(k) (Ky Fan),
  and the ratio E_A→B / E_B ∈ [0, 1] says how much of what a k-subspace can hold A's holds.
- Null (A's directions know nothing of B): U_A,k a uniformly random (Haar) k-subspace of R^d
  independent of B. Then E(k) has mean k/d, and the observed E_A→B is exchangeable with R draws
  F_r (Haar d×k frames) of E_r = tr(F_rᵀ G_B F_r)/tr(G_B), so the empirical
  p = (1 + #{E_r + margin ≥ E_A→B}) / (1 + R) is exact, as in the sharing test
  (:mod:`weightspace.core.sharing`); Benjamini–Hochberg across a pair's matrices.
- Overlap of two k-subspaces: ‖U_Aᵀ U_B‖²_F / k = mean cos² of their principal angles, 1 for the
  same subspace and k/d in expectation for a random one; the principal angles are the arccos of
  the singular values of U_Aᵀ U_B (Björck & Golub 1973).
"""

from __future__ import annotations

import numpy as np
import torch

from .hosvd import col_gram, eigvals_desc, row_gram
from .sharing import haar_frames


def mode_gram(X: torch.Tensor, mode: str) -> torch.Tensor:
    """X Xᵀ (``row``) or Xᵀ X (``col``) of one centred matrix, float64 (``hosvd.row_gram`` /
    ``hosvd.col_gram``)."""
    X = X.to(torch.float64)
    return row_gram(X) if mode == "row" else col_gram(X)


def captured_energy(U: torch.Tensor, G: torch.Tensor) -> float:
    """tr(Uᵀ G U) / tr(G): the share of a stack's mode energy (its mode Gram G) that the
    orthonormal columns of U capture (0 when the stack has no energy)."""
    total = float(torch.trace(G))
    if total <= 0:
        return 0.0
    U = U.to(G.dtype)
    return float((U * (G @ U)).sum()) / total


def own_energy(G: torch.Tensor, k: int) -> float:
    """Σ_{j≤k} λ_j(G) / tr(G): what the stack's own top-k directions capture (the most any
    k-subspace can)."""
    lam = eigvals_desc(G.to(torch.float64))
    total = float(lam.sum())
    return float(lam[:k].sum()) / total if total > 0 else 0.0


def haar_energy_draws(G: torch.Tensor, k: int, draws: int, generator: torch.Generator,
                      batch: int = 64) -> np.ndarray:
    """``draws`` values of captured_energy(F, G) with F a Haar-random d×k frame (the null)."""
    d = G.shape[0]
    total = float(torch.trace(G))
    out = []
    for start in range(0, draws, batch):
        n = min(batch, draws - start)
        F = haar_frames(torch.randn(n, d, k, generator=generator, dtype=torch.float32).double())
        out.append(((F * (G.to(torch.float64) @ F)).sum((1, 2)) / total).numpy() if total > 0 else np.zeros(n))
    return np.concatenate(out) if out else np.zeros(0)


def overlap(U_a: torch.Tensor, U_b: torch.Tensor) -> float:
    """‖U_aᵀ U_b‖²_F / k of two d×k orthonormal frames: the mean cos² of their principal angles
    (1: the same subspace; k/d in expectation for independent random ones)."""
    k = min(U_a.shape[1], U_b.shape[1])
    return float(((U_a[:, :k].T.to(torch.float64) @ U_b[:, :k].to(torch.float64)) ** 2).sum()) / k


def principal_angles(U_a: torch.Tensor, U_b: torch.Tensor) -> np.ndarray:
    """The principal angles (degrees, ascending) between the spans of two orthonormal frames."""
    s = torch.linalg.svdvals(U_a.T.to(torch.float64) @ U_b.to(torch.float64)).clamp(0, 1)
    return np.degrees(np.arccos(s.numpy()))


def random_overlap(k: int, d: int) -> float:
    """E ‖U_aᵀ U_b‖²_F / k for a Haar-random k-subspace against any fixed one: k / d."""
    return min(k, d) / d


def above_chance(captured: float, own: float, chance: float) -> float:
    """(captured − chance) / (own − chance): where a subspace's captured energy sits between a
    random k-subspace's expectation k/d (0) and the stack's own top-k (1)."""
    return (captured - chance) / (own - chance) if own > chance else float("nan")
