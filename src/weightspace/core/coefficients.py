r"""A weight change held as coefficients in a fixed basis.

For one analysed m×n matrix with orthonormal bases U_row (m×k_r) and U_col (n×k_c),

    ΔW(C) = U_row C U_colᵀ,        C ∈ ℝ^{k_r×k_c},

is a rank-min(k_r, k_c) change with k_r·k_c free numbers. Coefficients-only adaptation trains
C alone (the bases, the start point and every other weight stay frozen). As a LoRA of rank
k_c (PEFT adds s·B A, s = lora_alpha / r):

    B = U_row C  (m×k_c),    A = U_colᵀ  (k_c×n),    lora_alpha = r  ⇒  s = 1,  B A = ΔW(C).
"""

from __future__ import annotations

import torch


class CoefficientDelta(torch.nn.Module):
    """A parametrization W ↦ W + U_row C U_colᵀ (``torch.nn.utils.parametrize``) with only C
    trainable (U_row, U_col are buffers); C starts at 0, so the module starts at W."""

    def __init__(self, U_row: torch.Tensor, U_col: torch.Tensor, dtype=torch.float32):
        super().__init__()
        self.register_buffer("U_row", U_row.to(dtype).contiguous())
        self.register_buffer("U_col", U_col.to(dtype).contiguous())
        self.C = torch.nn.Parameter(torch.zeros(U_row.shape[1], U_col.shape[1], dtype=dtype))

    def delta(self) -> torch.Tensor:
        return self.U_row @ self.C @ self.U_col.T

    def forward(self, W: torch.Tensor) -> torch.Tensor:
        return W + self.delta().reshape(W.shape)


def add_coefficients(module: torch.nn.Module, U_row: torch.Tensor, U_col: torch.Tensor) -> CoefficientDelta:
    """Make ``module.weight`` = W_0 + U_row C U_colᵀ with W_0 frozen and C trainable."""
    from torch.nn.utils import parametrize

    delta = CoefficientDelta(U_row, U_col, module.weight.dtype)
    parametrize.register_parametrization(module, "weight", delta)
    module.parametrizations.weight.original.requires_grad_(False)
    return delta


def lora_factors(C: torch.Tensor, U_row: torch.Tensor, U_col: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, A) = (U_row C, U_colᵀ): B A = U_row C U_colᵀ at LoRA scale 1."""
    return U_row[:, : C.shape[0]] @ C, U_col[:, : C.shape[1]].T.contiguous()
