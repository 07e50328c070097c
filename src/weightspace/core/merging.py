r"""Merging task vectors into one model.

Task vectors τ_i = W_i − W_ref (per tensor; for LoRA adapters τ_i = ΔW_i). A merge returns one
τ and the merged model is W_ref + τ. Entry-wise methods are PEFT's own
(``peft.utils.merge_utils``), never re-implemented here:

- ``mean``             task arithmetic with λ = 1/N: τ = (1/N) Σ_i τ_i;
- ``task_arithmetic``  τ = λ Σ_i τ_i;
- ``ties``             trim each τ_i to its top ``density`` fraction by magnitude, elect a sign
                       per entry (by total mass), average the agreeing entries; times λ;
- ``dare_ties``        DARE (random drop with rescaling by 1/density) then TIES' election;
- ``magnitude_prune``  trim each τ_i by magnitude, then λ Σ_i.

The published SVD mergers, each a function of the merged matrices' task vectors (tensors of
other shapes, e.g. biases, are merged by the mean, as their papers do), all scaled by α chosen on
validation data:

- ``tsv``   TSV-Merge (Gargiulo et al. 2025, "Task Singular Vectors"): each τ_i keeps its
            leading r = ⌊min(m, n)/N⌋ singular triplets (only those with σ > 1e-10 σ_max: a
            low-rank τ_i, e.g. a LoRA delta, has no more; its null-space vectors are arbitrary,
            and kept they would move the polar factors by whatever basis LAPACK returns);
            U = [U_1 … U_N], Σ = diag(Σ_1 … Σ_N),
            V = [V_1 … V_N]; U and V are replaced by their nearest orthogonal matrices (polar
            factors U⊥ = P Qᵀ of U = P S Qᵀ) and τ = α U⊥ Σ V⊥ᵀ: every task keeps its own
            directions, decorrelated from the others';
- ``iso_c`` Iso-C (Marczak et al. 2025, "No Task Left Behind"): τ_Σ = Σ_i τ_i = U S Vᵀ, every
            singular value replaced by their mean, τ = α σ̄ U Vᵀ (isotropic on the span of the
            sum: directions with σ ≤ 1e-10 σ_max, i.e. outside it, are left out, which for the full
            fine-tunes of the paper changes nothing and for low-rank adapter sums keeps σ̄ off
            directions no task moved);
- ``knots_ties`` KnOTS (Stoica et al. 2025, "Model merging with SVD to tie the KnOTS"): the
            task vectors side by side, [τ_1 … τ_N] = U S [V_1ᵀ … V_Nᵀ] (singular values above
            1e-10 σ_max), aligns them in one basis U; the per-task coordinates S V_iᵀ are merged
            by TIES and τ = U · TIES(S V_1ᵀ, …, S V_Nᵀ). With task arithmetic in place of TIES it
            is task arithmetic exactly (tested).

In a shared basis (U_row m×k_r, U_col n×k_c, basis mean μ; coefficients of the centred models
C_i = U_rowᵀ (W_i − μ) U_col):

- ``subspace_mean``    W_ref + (1/N) Σ_i (μ + U_row C_i U_colᵀ − W_ref) = μ + U_row C̄ U_colᵀ.
  With a centred basis fitted on exactly the merged models, Σ_i C_i = 0, so this is μ: the
  plain mean of the models, whatever k (tested to 1e-12);
- ``subspace_ties``    TIES on the coefficients of the task vectors in the basis,
  D_i = U_rowᵀ τ_i U_col (trim, elect, disjoint mean on the k_r×k_c entries), then
  τ = λ U_row D U_colᵀ (the KnOTS idea, with the collection's own basis instead of an SVD of
  the merged adapters). What lies outside the basis is dropped.
"""

from __future__ import annotations

import torch

ENTRYWISE = ("mean", "task_arithmetic", "ties", "dare_ties", "magnitude_prune")
SUBSPACE = ("subspace_mean", "subspace_ties")
SVD = ("tsv", "iso_c", "knots_ties")
METHODS = ENTRYWISE + SUBSPACE + SVD
TUNED = ("task_arithmetic", "ties", "dare_ties", "magnitude_prune", "subspace_ties", *SVD)  # λ / α on validation
RTOL = 1e-10  # singular values below RTOL·σ_max are numerical zeros (outside the matrices' span)


def merge_entrywise(method: str, taus: list[torch.Tensor], lam: float = 1.0, density: float = 0.5,
                    seed: int = 0) -> torch.Tensor:
    """One merged task vector from N task vectors of one tensor, by PEFT's merge utilities."""
    from peft.utils import merge_utils  # imported here: a figure job reading results needs no PEFT

    N = len(taus)
    if method == "mean":
        return merge_utils.task_arithmetic(taus, torch.full((N,), 1.0 / N, dtype=taus[0].dtype))
    w = torch.full((N,), float(lam), dtype=taus[0].dtype)
    if method == "task_arithmetic":
        return merge_utils.task_arithmetic(taus, w)
    if method == "ties":
        return merge_utils.ties(taus, w, density)
    if method == "dare_ties":
        torch.manual_seed(seed)  # DARE's random drop draws from torch's global generator
        return merge_utils.dare_ties(taus, w, density)
    if method == "magnitude_prune":
        return merge_utils.magnitude_prune(taus, w, density)
    raise ValueError(f"unknown entry-wise merge method {method!r}; available: {ENTRYWISE}")


def subspace_mean(coeffs: list[torch.Tensor], mean: torch.Tensor, U_row: torch.Tensor,
                  U_col: torch.Tensor) -> torch.Tensor:
    """μ + U_row C̄ U_colᵀ with C̄ the mean of the models' coefficients (leading k_r×k_c)."""
    C = torch.stack(coeffs).mean(0)
    kr, kc = C.shape
    return mean + U_row[:, :kr] @ C @ U_col[:, :kc].T


def subspace_ties(taus: list[torch.Tensor], U_row: torch.Tensor, U_col: torch.Tensor, lam: float = 1.0,
                  density: float = 0.5) -> torch.Tensor:
    """λ U_row TIES(U_rowᵀ τ_i U_col) U_colᵀ (see the module docstring)."""
    from peft.utils import merge_utils

    D = [U_row.T @ t @ U_col for t in taus]
    merged = merge_utils.ties(D, torch.ones(len(D), dtype=D[0].dtype), density)
    return lam * (U_row @ merged @ U_col.T)


def polar(M: torch.Tensor) -> torch.Tensor:
    """The orthogonal matrix nearest to M (Frobenius): P Qᵀ for M = P S Qᵀ."""
    P, _, Qh = torch.linalg.svd(M, full_matrices=False)
    return P @ Qh


def tsv(taus: list[torch.Tensor], alpha: float = 1.0) -> torch.Tensor:
    """TSV-Merge of N matrices (module docstring)."""
    N = len(taus)
    r = max(1, min(taus[0].shape) // N)
    Us, Ss, Vs = [], [], []
    for t in taus:
        U, s, Vh = torch.linalg.svd(t, full_matrices=False)
        keep = min(r, int((s > RTOL * s[0]).sum()) if len(s) and s[0] > 0 else 0)  # not its null space
        Us.append(U[:, :keep])
        Ss.append(s[:keep])
        Vs.append(Vh[:keep])
    U, S, Vh = torch.cat(Us, 1), torch.cat(Ss), torch.cat(Vs, 0)
    if not len(S):
        return torch.zeros_like(taus[0])
    return alpha * (polar(U) * S) @ polar(Vh)


def iso_c(taus: list[torch.Tensor], alpha: float = 1.0) -> torch.Tensor:
    """Iso-C of N matrices: α σ̄ U Vᵀ on the span of Σ_i τ_i (module docstring)."""
    U, s, Vh = torch.linalg.svd(torch.stack(taus).sum(0), full_matrices=False)
    keep = s > RTOL * s[0] if len(s) and s[0] > 0 else s > 0
    return alpha * s[keep].mean() * U[:, keep] @ Vh[keep] if bool(keep.any()) else torch.zeros_like(taus[0])


def knots(taus: list[torch.Tensor], method: str = "ties", lam: float = 1.0, density: float = 0.5,
          seed: int = 0) -> torch.Tensor:
    """KnOTS: the task vectors aligned by one SVD of [τ_1 … τ_N], their coordinates S V_iᵀ merged
    by an entry-wise ``method`` (TIES by default), mapped back by U (module docstring)."""
    n = taus[0].shape[1]
    U, s, Vh = torch.linalg.svd(torch.cat(taus, dim=1), full_matrices=False)
    keep = s > RTOL * s[0] if len(s) and s[0] > 0 else s > 0
    coords = list((s[keep, None] * Vh[keep]).split(n, dim=1))  # N blocks of r × n
    return U[:, keep] @ merge_entrywise(method, coords, lam, density, seed)

