r"""The sharing test: do a stack's models share directions beyond what their own spectra explain?

Null hypothesis H0 (nothing shared): every model's singular vectors are independent and
uniformly random, W_i =ᵈ Q_i W_i R_i with Haar-random orthogonal Q_i (m×m) and R_i (n×n).
Under H0 the uncentred row Gram of the stack, Σ_i W_i W_iᵀ, has the law of

    Σ_i F_i diag(s_i²) F_iᵀ,      F_i a uniformly random m×r_i orthonormal frame,

which depends on the models' singular values s_i only (the first r_i = len(s_i) columns of a
Haar matrix are a uniform frame). A draw of the null therefore needs N small QR
factorisations and the eigenvalues of one Gram (m×m, or Σr_i × Σr_i when smaller); the
column mode likewise with n×r_i frames. Spectra are compared uncentred: centring after a
rotation would mix in the mean the rotation destroyed.

Each model's frame in draw l is drawn from its own Philox stream (key: seed, matrix, mode,
model; ``model_gaussians``), so the m×m Gram of a draw is a sum of the models' own
contributions: an added model adds its frame to the Grams kept from the last run
(``NullMode``), and the same models give the same draws in any order, in any chunking.

Statistic of one matrix: the mean over its exact modes of the area under the cumulative
explained-variance curve up to K,

    T = mean_modes (1/K) Σ_{k=1..K} EVR_mode(k),     EVR(k) = Σ_{j≤k} λ_j / Σ_j λ_j,

(EVR(k) = 1 beyond a mode's dimension), large when a few directions carry the stack.

p-value: under H0 the data are exchangeable with the R draws, so the empirical
p = (1 + #{r: T_r ≥ T}) / (1 + R) is exact (P(p ≤ α) ≤ α for every α), but cannot go below
1/(1 + R). Benjamini–Hochberg across the matrices of a view then rejects every matrix of a
view whose p-values are all 1/(1+R) as soon as 1/(1+R) ≤ q, and rejects s of m matrices
only when their p ≤ q·s/m: with R = 99 draws the test reaches q = 0.05 when at least 20% of a
view's matrices are shared (see ``stats.min_detectable_share``). The z-score
z = (T − mean_r T_r) / sd_r T_r is reported beside it as an effect size, not used for the
decision (its normality is not assumed). The p-values, BH and a view's calls are numpy-only
functions in ``core.stats`` (a job that reads stored results needs no torch).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch


def singular_values(W: torch.Tensor) -> torch.Tensor:
    """Singular values of a dense matrix, descending, float64."""
    return torch.linalg.svdvals(W.to(torch.float64))


def lowrank_singular_values(B: torch.Tensor, A: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Singular values of scale·B·A (B: m×r, A: r×n) from the r×r core: with B = Q_b R_b and
    Aᵀ = Q_a R_a, scale·B·A = Q_b (scale·R_b R_aᵀ) Q_aᵀ."""
    Rb = torch.linalg.qr(B.to(torch.float64))[1]
    Ra = torch.linalg.qr(A.to(torch.float64).T)[1]
    return torch.linalg.svdvals(scale * Rb @ Ra.T)


def padded(svals: list[torch.Tensor]) -> torch.Tensor:
    """Models' singular values as one N × max r float64 tensor, zero-padded (a zero singular
    value contributes nothing to a Gram)."""
    r = max(len(s) for s in svals)
    out = torch.zeros(len(svals), r, dtype=torch.float64)
    for i, s in enumerate(svals):
        out[i, : len(s)] = s.to(torch.float64).cpu()
    return out


def haar_frames(X: torch.Tensor) -> torch.Tensor:
    """Uniform (Haar) dim×r orthonormal frames from Gaussian dim×r matrices (batched): the Q of
    X = QR (Householder) with R's diagonal made positive, the unique factor whose law is Haar.
    The Gaussians may be drawn in float32 (5× faster to draw): the frame is still uniform.
    (CholeskyQR2 was 1.1–2× slower at every shape of the demo and large ones, one thread.)"""
    Q, R = torch.linalg.qr(X)
    sign = torch.sign(torch.diagonal(R, dim1=-2, dim2=-1))
    return Q * torch.where(sign == 0, 1.0, sign).to(Q.dtype).unsqueeze(-2)


def rotation_null_draws(svals: list[torch.Tensor], dim: int, draws: int, generator: torch.Generator
                        ) -> torch.Tensor:
    """Eigenvalues (descending, draws × min(dim, N·r)) of ``draws`` independent draws of the
    rotated stack's Gram in a mode of dimension ``dim``: Σ_i F_i diag(s_i²) F_iᵀ with uniform
    dim×r frames F_i (see the module docstring). ``svals``: each model's singular values."""
    S = padded(svals)  # N × r (zero-padded: a zero singular value adds nothing)
    N, r = S.shape
    if r > dim:
        raise ValueError(f"{r} singular values do not fit a mode of dimension {dim}")
    return torch.stack([draw_eigenvalues(torch.randn(N, dim, r, generator=generator, dtype=torch.float32).double(), S)
                        for _ in range(draws)])


def draw_eigenvalues(X: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    """Eigenvalues (descending, min(dim, N·r)) of one null draw Σ_i F_i diag(s_i²) F_iᵀ, F_i the
    Haar frame of the Gaussian X_i (X: N × dim × r, S: N × r)."""
    N, dim, r = X.shape
    return stacked_eigenvalues((haar_frames(X) * S[:, None, :]).permute(1, 0, 2).reshape(dim, N * r))


def stacked_eigenvalues(Z: torch.Tensor) -> torch.Tensor:
    """Eigenvalues (descending, min(dim, w)) of Z Zᵀ for scaled frames stacked side by side
    (… × dim × w), from the smaller of Z Zᵀ and Zᵀ Z (the same non-zero spectrum)."""
    dim, w = Z.shape[-2:]
    Zt = Z.transpose(-1, -2)
    return psd_eigenvalues(Z @ Zt if dim <= w else Zt @ Z, min(dim, w))


def psd_eigenvalues(G: torch.Tensor, n: int) -> torch.Tensor:
    """The n largest eigenvalues of symmetric positive semi-definite Grams (…× d × d), descending,
    rounding below 0 clamped to 0."""
    return torch.linalg.eigvalsh(G).flip(-1).clamp_min(0)[..., :n]


def draw_area_bound(X: torch.Tensor, S: torch.Tensor, K: int, total: float, head: int) -> float:
    r"""An upper bound of one null draw's ``evr_area`` from the first ``head`` columns of its
    Gaussians X (N × dim × r) alone: ``head``·N frame columns instead of r·N, so a draw far
    below the data's statistic can be ruled out without its full Gram (not used by the stage).

    Split each model's part of the draw, F_i S_i² F_iᵀ = A_i + B_i, at its ``head``-th singular
    value. Ky Fan: Σ_{j≤k} λ_j(A + B) ≤ Σ_{j≤k} λ_j(A) + Σ_{j≤k} λ_j(B), and
    Σ_{j≤k} λ_j(B) ≤ min(Σ_i Σ_{j=h+1}^{h+k} s_ij², tr B). A = Σ_i A_i is exact: the first h
    columns of the Haar frame of X_i are the Haar frame of X_i's first h columns (the QR of a
    matrix's leading columns is the leading part of its QR), so the bound uses the same draw."""
    h = min(head, X.shape[-1])
    lam = draw_eigenvalues(X[..., :h], S[:, :h])
    lam = torch.cat([lam, lam.new_zeros(max(0, K - len(lam)))])[:K]
    s2 = S[:, h:] ** 2
    tail = torch.cumsum(torch.cat([s2, s2.new_zeros(len(S), K)], 1)[:, :K], 1).sum(0)
    cum = torch.cumsum(lam, 0) + torch.minimum(tail, s2.sum())
    return float(torch.clamp(cum / total, max=1.0).mean())


def philox_key(*parts) -> int:
    """A 128-bit Philox key from the parts' text (blake2b): one per model, matrix and mode."""
    text = "\x1f".join(map(str, parts)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=16).digest(), "little")


def model_gaussians(key: int, dim: int, r: int, draws: range) -> torch.Tensor:
    """One model's dim×r standard Gaussians (float32) for the null draws in ``draws``: draw l
    from Philox(key) at counter (0, l, 0, 0). Any draw of any model is drawn without the ones
    before it (a draw uses far fewer than 2⁶⁴ counter steps: streams never overlap), and a
    model's draws depend on its own key only, not on the other models of the stack."""
    return torch.from_numpy(np.stack([
        np.random.Generator(np.random.Philox(key=key, counter=[0, l, 0, 0])).standard_normal((dim, r), dtype=np.float32)
        for l in draws]))


@dataclass
class NullMode:
    """One exact mode of a matrix's rotation null: its dimension and a Philox key per model
    (``philox_key``); ``gram``: the null Grams G_l of the first ``cached`` models for the
    first L draws (L × dim × dim, kept from an earlier run), to which the other models'
    contributions are added."""

    dim: int
    keys: list[int]
    gram: torch.Tensor | None = None
    cached: int = 0


NULL_CHUNK = 11  # draws computed together (99 = 9 chunks); the numbers do not depend on it
NULL_CHUNK_BYTES = 64 << 20  # the largest chunk of Grams or frames held at once


def _wide(svals: list[torch.Tensor], dim: int) -> bool:
    """Whether a mode's draws are computed as dim × dim Grams (additive over models, cached):
    dim ≤ Σ r_i; else from the smaller Σr × Σr Gram of the stacked frames (``stacked_eigenvalues``)."""
    return dim <= _width(svals)


def _width(svals: list[torch.Tensor]) -> int:
    """Σ r_i: the columns of a draw's stacked frames."""
    return sum(len(s) for s in svals)


def null_chunk(svals: list[torch.Tensor], mode: NullMode, draws: range) -> tuple[torch.Tensor, torch.Tensor | None]:
    r"""Eigenvalues (descending, c × min(dim, Σ r_i)) of the null draws ``draws`` of one mode,

        G_l = Σ_i Z_il Z_ilᵀ,   Z_il = F_il diag(s_i),

    F_il the Haar frame (``haar_frames``) of model i's draw-l Gaussian (``model_gaussians``),
    s_i the model's own (non-zero) singular values. Wide modes (``_wide``): G_l itself, the
    cached Grams for the draws they hold plus the other models' contributions, returned (for
    the next run's cache); else the eigenvalues of the smaller Gram Z_lᵀZ_l, Z_l = [Z_1l … Z_Nl]."""
    if _width(svals) == 0:
        return torch.zeros(len(draws), 1, dtype=torch.float64), None
    frames = lambda i, rng: haar_frames(model_gaussians(mode.keys[i], mode.dim, len(svals[i]), rng).double()) * svals[i]  # noqa: E731
    if not _wide(svals, mode.dim):
        return stacked_eigenvalues(torch.cat([frames(i, draws) for i, s in enumerate(svals) if len(s)], -1)), None
    L = 0 if mode.gram is None else mode.gram.shape[0]
    G = torch.zeros(len(draws), mode.dim, mode.dim, dtype=torch.float64)
    held = max(0, min(draws.stop, L) - draws.start)  # the draws the cache holds: a prefix of ``draws``
    if held:
        G[:held] = mode.gram[draws.start: draws.start + held]
    for i, s in enumerate(svals):
        rng = draws if i >= mode.cached else draws[held:]  # cached models are in the held Grams
        if len(s) and len(rng):
            Z = frames(i, rng)
            G[len(draws) - len(rng):].baddbmm_(Z, Z.transpose(1, 2))
    return psd_eigenvalues(G, mode.dim), G


def sequential_null(svals: list[torch.Tensor], modes: list[NullMode], K: int, total: float, statistic: float,
                    draws: int, stop_after: int, keep_grams: bool = False
                    ) -> tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor | None]]:
    """Rotation-null draws of a matrix's exact modes (``null_chunk``), a chunk of draws at a
    time, stopped as Besag & Clifford (1991) do: at the draw where ``stop_after`` draws have
    reached the data's ``statistic`` (the mean over modes of ``evr_area``), or after ``draws``
    (``stop_after`` 0: always ``draws``). A matrix far above its null uses every draw; a
    matrix like its null stops after about ``stop_after``/p draws. Draw l of every model is the
    same whatever the chunk, the stop or the other models (``model_gaussians``).
    Returns each mode's l × spectrum eigenvalues, the l × modes areas, and with
    ``keep_grams`` each wide mode's Grams of every draw computed (≥ l, for a cache)."""
    w = _width(svals)
    per_draw = max(8 * (m.dim ** 2 if _wide(svals, m.dim) else m.dim * w + w ** 2) for m in modes)
    chunk = max(1, min(NULL_CHUNK, NULL_CHUNK_BYTES // max(per_draw, 1)))
    eigs, grams, areas, reached, done = [[] for _ in modes], [[] for _ in modes], [], 0, 0
    while done < draws and not (stop_after and reached >= stop_after):
        rng = range(done, min(done + chunk, draws))
        for j, mode in enumerate(modes):
            lam, G = null_chunk(svals, mode, rng)
            eigs[j].append(lam)
            grams[j].append(G if keep_grams else None)
        for row in torch.stack([evr_area(e[-1], K, total) for e in eigs], 1):
            if stop_after and reached >= stop_after:
                break
            areas.append(row)
            reached += float(row.mean()) >= statistic
        done = rng.stop
    used = len(areas)
    return ([torch.cat(e)[:used] for e in eigs], torch.stack(areas),
            [torch.cat(g) if g and g[0] is not None else None for g in grams])


def evr_area(eigs: torch.Tensor, K: int, total: float | None = None) -> torch.Tensor:
    """(1/K) Σ_{k=1..K} EVR(k) of a descending spectrum (last axis; EVR(k) = 1 beyond its
    length when ``total`` is the spectrum's own sum)."""
    total = eigs.sum(-1, keepdim=True) if total is None else torch.as_tensor(total, dtype=eigs.dtype)
    cum = torch.cumsum(eigs, -1) / total
    if cum.shape[-1] < K:
        cum = torch.cat([cum, cum[..., -1:].expand(*cum.shape[:-1], K - cum.shape[-1])], -1)
    return cum[..., :K].mean(-1)


def ceiling_area(s2: torch.Tensor, N: int, K: int, dim: int, draws: int, generator: torch.Generator) -> float:
    """The largest excess of one mode's statistic that N basis models can show (the test's power
    ceiling): N identical copies of one matrix with squared singular values ``s2`` share
    everything, so the stack's uncentred EVR curve is the matrix's own, while the rotation null
    of those N copies (``rotation_null_draws``, ``draws`` draws) already captures much of it when
    N·r is small against the mode's dimension (a 1×128 head at N = 4 reaches at most ~0.04).
    Returned: own area − mean null area (``evr_area``)."""
    s2 = torch.sort(s2.to(torch.float64).clamp_min(0), descending=True).values
    if float(s2.sum()) <= 0:
        return 0.0
    own = float(evr_area(s2, K))
    null = rotation_null_draws([s2.sqrt()] * N, dim, draws, generator)
    return own - float(evr_area(null, K).mean())
