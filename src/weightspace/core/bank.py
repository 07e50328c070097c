r"""The model bank's linear map: every model of a collection served from one basis, the rows of
one batch belonging to different models.

Per matrix, model i is W_i = R + U_r C_i U_cᵀ (m×n) with a bias b_i, where R (m×n), U_r
(m×k_r) and U_c (n×k_c) are shared and only the k_r×k_c core C_i is the model's own: R is the
collection's mean (full view) or the base weight plus the mean update (adapters' delta view).
For a batch X whose row b (a vector, or a sequence of vectors) belongs to model m(b):

    y_b = x_b Rᵀ + ((x_b U_c) C_{m(b)}ᵀ) U_rᵀ + b_{m(b)}

The shared product x Rᵀ and the down-projection x U_c are each one product for the whole
batch, the k×k step is one batched product over the rows' gathered cores (or one product per
model when many rows share it), the up-projection is shared again and added in place. Per vector:

    m·n + n·k_c + k_r·k_c + m·k_r   multiply-adds    (``bank_flops``)

whatever the number of distinct models in the batch: the k·(m+n) + k² beyond a dense model's
m·n is ~4% for a 768×768 matrix at k = 16. Per model a bank holds k_r·k_c numbers per matrix
(plus its bias), where a rank-r LoRA holds r·(m+n) (12 288 for r = 8 on 768×768; 256 for the
bank at k = 16). When a whole batch is one model (``model_ids`` an int) the gather is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class RowPlan:
    """How a batch's rows are grouped by model: ``ids`` (B), and when many rows share each
    model, ``order`` (the rows sorted by model) and ``counts`` (rows per model, in that order)."""

    ids: torch.Tensor
    order: torch.Tensor | None = None
    counts: tuple[int, ...] = ()


# rows per distinct model from which the k×k step runs per model on contiguous rows rather
# than as a gather of every row's core (measured: 4096 rows of 40 models, k = 32, float64:
# 1.4 ms against 25 ms; 1024 rows of 1000 models, k = 16: the gather 0.5 ms against 6 ms)
SEGMENT_ROWS = 16


def plan_rows(model_ids: torch.Tensor, n_models: int) -> RowPlan:
    """The RowPlan of a B-vector of model indices (grouped when ≥ SEGMENT_ROWS rows per model)."""
    counts = torch.bincount(model_ids, minlength=n_models)
    if len(model_ids) < SEGMENT_ROWS * int((counts > 0).sum()):
        return RowPlan(model_ids)
    return RowPlan(model_ids, torch.argsort(model_ids, stable=True), tuple(counts.tolist()))


def gather_core(z: torch.Tensor, C: torch.Tensor, model_ids) -> torch.Tensor:
    """z_b C_{m(b)}ᵀ for every row b of z (B×…×k_c): C is N×k_r×k_c; ``model_ids`` one int (the
    whole batch one model: no gather), a B-vector of model indices (each row's core gathered,
    one batched product), or a RowPlan (grouped rows: one product per model present)."""
    if isinstance(model_ids, int):
        return z @ C[model_ids].T
    plan = model_ids if isinstance(model_ids, RowPlan) else RowPlan(model_ids)
    B = z.shape[0]
    flat = z.reshape(B, -1, z.shape[-1])                      # B × T × k_c
    if plan.order is None:
        out = torch.bmm(flat, C[plan.ids].transpose(1, 2))    # B × T × k_r
    else:
        zs = flat[plan.order]
        out_sorted = zs.new_empty(B, flat.shape[1], C.shape[1])
        start = 0
        for m, c in enumerate(plan.counts):
            if c:
                out_sorted[start:start + c] = zs[start:start + c] @ C[m].T
                start += c
        out = torch.empty_like(out_sorted)
        out[plan.order] = out_sorted
    return out.reshape(*z.shape[:-1], C.shape[1])


def row_ids(model_ids):
    """The B-vector (or int) of model indices behind an int, a tensor or a RowPlan."""
    return model_ids.ids if isinstance(model_ids, RowPlan) else model_ids


def bank_linear(x: torch.Tensor, model_ids, R: torch.Tensor, U_row: torch.Tensor, U_col: torch.Tensor,
                C: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = x Rᵀ + ((x U_c) C_{m(row)}ᵀ) U_rᵀ + b_{m(row)} (module docstring).

    x: B×…×n (the first dimension indexes rows, each row one model's); model_ids: a B-vector
    (long), a RowPlan or an int; R: m×n; U_row: m×k_r; U_col: n×k_c; C: N×k_r×k_c; bias: N×m
    (per model), m (shared) or None. The shared product is one GEMM; the up-projection and the
    per-row bias are added into its output in place (measured: 24 ms against 20 ms for the dense
    product alone, 1024 rows of a 768→3072 layer on 2 cores).
    """
    m = R.shape[0]
    shared = bias if bias is not None and bias.ndim == 1 else None
    y = F.linear(x, R, shared)                                 # B × … × m (contiguous)
    core = gather_core(x @ U_col, C, model_ids)                # B × … × k_r
    y.view(-1, m).addmm_(core.reshape(-1, core.shape[-1]), U_row.T)
    if bias is None or bias.ndim == 1:
        return y
    b = bias[row_ids(model_ids)]
    if not isinstance(model_ids, int):
        b = b.reshape(b.shape[0], *([1] * (y.ndim - 2)), b.shape[-1])
    return y.add_(b)


def bank_dense(R: torch.Tensor, U_row: torch.Tensor, U_col: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """Every model's matrix W_i = R + U_r C_i U_cᵀ (N×m×n): the reference the bank must equal."""
    return R + U_row @ C @ U_col.T


def bank_flops(m: int, n: int, k_r: int, k_c: int) -> dict[str, int]:
    """Multiply-adds per input vector of one matrix: the dense product, and what the bank adds."""
    return {"dense": m * n, "bank": m * n + n * k_c + k_r * k_c + m * k_r,
            "extra": n * k_c + k_r * k_c + m * k_r}


def lora_rank_for_bytes(k_r: int, k_c: int, m: int, n: int) -> int:
    """The LoRA rank r whose r·(m + n) numbers per model come closest to the bank's k_r·k_c
    (at least 1)."""
    return max(1, round(k_r * k_c / (m + n)))
