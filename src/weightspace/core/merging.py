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
METHODS = ENTRYWISE + SUBSPACE
TUNED = ("task_arithmetic", "ties", "dare_ties", "magnitude_prune", "subspace_ties")  # λ chosen on validation


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
