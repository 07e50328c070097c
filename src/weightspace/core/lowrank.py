"""A matrix held as its low-rank factors (a LoRA delta): scale·B·A."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # no torch import here: the light jobs (fetch, extract) read layers without it
    import torch


@dataclass
class LowRank:
    """The matrix scale·B·A held as its factors (B: m×r, A: r×n)."""

    B: torch.Tensor
    A: torch.Tensor
    scale: float

    @property
    def shape(self) -> tuple[int, int]:
        return (self.B.shape[0], self.A.shape[1])

    def dense(self) -> torch.Tensor:
        return self.scale * (self.B @ self.A)

    def map_tensors(self, fn) -> LowRank:
        """The same matrix with ``fn`` applied to each factor (e.g. a move to another device)."""
        return LowRank(fn(self.B), fn(self.A), self.scale)
