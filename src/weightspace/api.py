"""The library from Python (a notebook), without the workflow: fit the shared subspace of
in-memory models, project and reconstruct, serve them all from one bank, and open a finished
run's subspaces and banks.

>>> from weightspace.api import fit
>>> sub = fit({"a": sd_a, "b": sd_b, "c": sd_c}, max_k=8)      # name → state dict
>>> C = sub.project(sd_new, k=4)                                # k×k coefficients per matrix
>>> sd_hat = sub.reconstruct(C)                                  # matrices μ + U_r C U_cᵀ
>>> model.load_state_dict(sub.compress(sd_new, k=4))             # a whole state dict at k
>>> served = attach(sub.bank(models, k=4), skeleton)             # every model in one forward
>>> y = served(x, model_ids=["a", "c", "a"])                      # one model per row

The decomposition is the workflow's own (:mod:`weightspace.core.hosvd`: float64 mode sums of the
stack, exact eigendecompositions): per weight matrix (every tensor of two or more dimensions,
a conv kernel as out × in·kh·kw) with μ the mean of the models and X_i = W_i − μ, U_row and
U_col are the leading eigenvectors of Σ X_i X_iᵀ and Σ X_iᵀ X_i, a model's coefficients are
C = U_row,kᵀ (W − μ) U_col,k and its reconstruction μ + U_row,k C U_col,kᵀ. Tensors of one
dimension (biases, norms) are not decomposed: ``reconstruct`` leaves them out unless given the
state dict they come from (``like``), and ``compress`` returns the whole state dict, every
tensor in its own dtype. Everything is held in memory: for hundreds of large models use the
workflow, which streams.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .bank import Bank, BankModel, Matrix, attach, load_bank  # noqa: F401  (the serving API)
from .core import hosvd, stats
from .project import coefficients, reconstruct


@dataclass
class Basis:
    """One matrix's subspace: mean μ (m×n), U_row (m×k_max), U_col (n×k_max), the tensor's own
    shape, and the centred row-mode spectrum (None when read from a run)."""

    mean: torch.Tensor
    U_row: torch.Tensor
    U_col: torch.Tensor
    shape: tuple[int, ...]
    eig_row: torch.Tensor | None = None
    total: float | None = None  # Σ_j λ_j of all eigenvalues (eig_row may hold only the leading ones)

    def explained_variance(self, k: int) -> float:
        """Σ_{j≤k} λ_j / Σ_j λ_j of the centred row mode."""
        if self.eig_row is None:
            raise ValueError("this basis holds no spectrum")
        ev = stats.explained_variance(self.eig_row, self.total)
        return float(ev[min(k, len(ev)) - 1])

    def __repr__(self) -> str:
        return (f"Basis({'×'.join(map(str, self.shape))}, {self.U_row.shape[1]} row and "
                f"{self.U_col.shape[1]} column directions)")


class Subspaces(dict):
    """name → :class:`Basis`, with projection and reconstruction of whole state dicts."""

    def project(self, state_dict: Mapping[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
        """C = U_row,kᵀ (W − μ) U_col,k for every matrix of the subspace (k limited by the
        stored directions)."""
        out = {}
        for name, b in self.items():
            if name not in state_dict:
                raise KeyError(f"the state dict has no tensor {name!r}")
            W = _matrix(state_dict[name], name, b.shape)
            out[name] = coefficients(W, b.mean, b.U_row[:, :k], b.U_col[:, :k])
        return out

    def bank(self, models: Mapping[str, Mapping[str, torch.Tensor]], k: int) -> Bank:
        """Every model of ``models`` (name → state dict) at k as one :class:`weightspace.bank.Bank`:
        the shared μ, U_row, U_col per matrix, each model's k×k coefficients and its other tensors
        (biases, norms) kept per model. ``attach(bank, skeleton)`` serves them in one forward."""
        names = list(models)
        if not names:
            raise ValueError("bank needs at least one model")
        mats = {}
        for name, b in self.items():
            kr, kc = min(k, b.U_row.shape[1]), min(k, b.U_col.shape[1])
            Ur, Uc = b.U_row[:, :kr], b.U_col[:, :kc]
            C = []
            for n in names:
                if name not in models[n]:
                    raise KeyError(f"model {n}: the state dict has no tensor {name!r}")
                C.append(coefficients(_matrix(models[n][name], f"{name} of model {n}", b.shape), b.mean, Ur, Uc))
            mats[name] = Matrix(name, tuple(b.shape), "weight", b.mean, Ur, Uc, torch.stack(C))
        others = [t for t in models[names[0]] if t not in self]
        kept = {}
        for t in others:
            missing = [n for n in names if t not in models[n]]
            if missing:
                raise KeyError(f"model {missing[0]}: no tensor {t!r} (model {names[0]} has one)")
            kept[t] = torch.stack([models[n][t].detach().to(torch.float64) for n in names])
        return Bank("full", k, names, mats, kept, configs=[{} for _ in names])

    def reconstruct(self, coeffs: Mapping[str, torch.Tensor],
                    like: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """μ + U_row C U_colᵀ for every matrix, in its tensor's shape (float64). With ``like``
        (the state dict the coefficients came from): a whole state dict, every tensor of ``like``
        in its own shape and dtype, the matrices replaced by their reconstructions."""
        out = {name: reconstruct(C.to(torch.float64), self[name].mean, self[name].U_row,
                                 self[name].U_col).reshape(self[name].shape) for name, C in coeffs.items()}
        if like is None:
            return out
        return {name: (out[name].reshape(t.shape).to(t.dtype) if name in out else t.detach().clone())
                for name, t in like.items()}

    def compress(self, state_dict: Mapping[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
        """The whole state dict at k: ``reconstruct(project(state_dict, k), like=state_dict)``,
        ready for ``model.load_state_dict``."""
        return self.reconstruct(self.project(state_dict, k), like=state_dict)

    def __repr__(self) -> str:
        return f"Subspaces({len(self)} matrices: {', '.join(list(self)[:4])}{', …' if len(self) > 4 else ''})"


def _matrix(t: torch.Tensor, name: str, shape) -> torch.Tensor:
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"tensor {name}: shape {tuple(t.shape)}, the subspace's is {tuple(shape)}")
    return t.detach().reshape(t.shape[0], -1).to(torch.float64)


def fit(models: Mapping[str, Mapping[str, torch.Tensor]], max_k: int = 16, center: bool = True) -> Subspaces:
    """The subspace of every weight matrix of ``models`` (name → state dict, all with the same
    matrices), exactly as the subspace stage computes it from stores."""
    if len(models) < 2:
        raise ValueError(f"fit needs at least two models, got {len(models)}")
    names = list(models)
    first = models[names[0]]
    out = Subspaces()
    for t, W0 in first.items():
        if W0.ndim < 2:
            continue
        mats = []
        for n in names:
            if t not in models[n]:
                raise ValueError(f"model {n}: no tensor {t!r} (model {names[0]} has one)")
            mats.append(_matrix(models[n][t], f"{t} of model {n}", W0.shape))
        sums = hosvd.ModeSums(*mats[0].shape)
        for W in mats:
            sums.add(W)
        flat = torch.stack([W.reshape(-1) for W in mats])
        sub = hosvd.decompose(sums, flat @ flat.T, max_k, center)
        out[t] = Basis(sub.mean, sub.U_row, sub.U_col, tuple(W0.shape), sub.eig_row, float(sub.total))
    return out


def load_run(results: str | os.PathLike, collection: str, view: str = "full") -> Subspaces:
    """The subspaces of a finished run (``results/{collection}/subspace/{view}/group-*.zarr``),
    as :func:`fit` returns them, with matrix shapes (a conv kernel reconstructs as out ×
    in·kh·kw) and the centred row spectrum (the run's spectra.parquet has every spectrum)."""
    from .subspace import load_subspaces

    groups = sorted((Path(results) / collection / "subspace" / view).glob("group-*.zarr"))
    if not groups:
        raise FileNotFoundError(f"no subspace of {collection} ({view}) under {results}")
    records, _ = load_subspaces([str(g) for g in groups])
    return Subspaces({name: Basis(r.mean, r.U_row, r.U_col, tuple(r.shape),
                                  torch.from_numpy(r.array("eig_row")).to(torch.float64), r.attrs.get("total"))
                      for name, r in records.items()})
