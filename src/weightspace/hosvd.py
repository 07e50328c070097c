r"""The decomposition: one definition, streaming, tested against SVD and tensorly.

For one target, models i = 1..N give matrices W_i (m×n). With centering (default)
μ = (1/N) Σ_i W_i and X_i = W_i − μ; without it X_i = W_i and μ = 0.

Mode Grams of the N×m×n stack X:

    G_row   = Σ_i X_i X_iᵀ            (m×m)   = Σ W_i W_iᵀ − N μ μᵀ
    G_col   = Σ_i X_iᵀ X_i            (n×n)   = Σ W_iᵀ W_i − N μᵀ μ
    G_model = [⟨X_i, X_j⟩_F]_ij        (N×N)   = H K H,  K_ij = ⟨W_i, W_j⟩,  H = I − 11ᵀ/N

so one streaming pass only needs the additive sums Σ W_i, Σ W_i W_iᵀ, Σ W_iᵀ W_i (kept in
float64), and adding models means adding to the sums. The eigenvectors of G_row, G_col,
G_model are the HOSVD factors (left singular vectors of the mode unfoldings of the stack,
what ``tensorly.tucker(init='svd', n_iter_max=0)`` returns); their eigenvalues λ are the
squared singular values, and every mode has the same total Σ_j λ_j = Σ_i ‖X_i‖²_F. The
explained variance of the first k directions of a mode is Σ_{j≤k} λ_j / Σ_j λ_j.

A LoRA delta ΔW = s·B·A (B: m×r, A: r×n) enters through its factors:
ΔW ΔWᵀ = s² B (A Aᵀ) Bᵀ, ΔWᵀ ΔW = s² Aᵀ (Bᵀ B) A and ⟨ΔW_i, ΔW_j⟩ = s_i s_j tr((B_iᵀ B_j)(A_j A_iᵀ)),
so no m×n product is formed per model (only the running sum Σ ΔW_i for the mean).

Nulls (same shapes, same N):

- Gaussian: i.i.d. entries with the variance of the centred data, through the same code.
  Weak: any anisotropic single matrix beats it.
- Rotation: W_i → Q_i W_i R_i with Haar-random orthogonal Q_i, R_i. Each model keeps its
  singular values; only the alignment between models is destroyed. Compared on uncentred
  spectra (centering after rotation mixes in the lost mean). The row Gram of the rotated
  stack is Σ Q_i (W_i W_iᵀ) Q_iᵀ, so it costs one m×m product per model, not a new pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .layers import LowRank

ACC = torch.float64  # accumulation dtype of every sum and Gram


def haar_orthogonal(n: int, generator: torch.Generator, dtype=ACC, device="cpu") -> torch.Tensor:
    """A Haar-distributed random n×n orthogonal matrix (QR of a Gaussian, signs fixed)."""
    g = torch.randn(n, n, generator=generator, dtype=dtype, device="cpu").to(device)
    q, r = torch.linalg.qr(g)
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


def random_orthonormal(n: int, k: int, generator: torch.Generator, dtype=ACC, device="cpu") -> torch.Tensor:
    """n×k matrix with orthonormal columns spanning a uniformly random k-dim subspace."""
    g = torch.randn(n, k, generator=generator, dtype=dtype, device="cpu").to(device)
    q, r = torch.linalg.qr(g)
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


def row_gram(W) -> torch.Tensor:
    """W Wᵀ (m×m); for LowRank s·B·A it is s² B (A Aᵀ) Bᵀ."""
    if isinstance(W, LowRank):
        return (W.scale ** 2) * (W.B @ (W.A @ W.A.T) @ W.B.T)
    return W @ W.T


def col_gram(W) -> torch.Tensor:
    """Wᵀ W (n×n); for LowRank s·B·A it is s² Aᵀ (Bᵀ B) A."""
    if isinstance(W, LowRank):
        return (W.scale ** 2) * (W.A.T @ (W.B.T @ W.B) @ W.A)
    return W.T @ W


def dense(W) -> torch.Tensor:
    return W.dense() if isinstance(W, LowRank) else W


@dataclass
class ModeSums:
    """Additive sums over models for one target: N, Σ W, Σ W Wᵀ, Σ Wᵀ W (float64).

    With ``rotation_seed`` set, also the rotation-null sums Σ Q_i W_i W_iᵀ Q_iᵀ and
    Σ R_iᵀ W_iᵀ W_i R_i, with Q_i, R_i drawn from a generator seeded by (seed, model seed); the
    model seed defaults to the model's index, and a stable per-model seed (from its key) makes
    the null independent of the order in which models are added.
    Sums of two disjoint sets of models add (``merge``), which makes adding models cheap.
    """

    m: int
    n: int
    device: str = "cpu"
    rotation_seed: int | None = None
    count: int = 0
    S: torch.Tensor = field(init=False)
    R: torch.Tensor = field(init=False)
    C: torch.Tensor = field(init=False)
    R_rot: torch.Tensor | None = field(init=False, default=None)
    C_rot: torch.Tensor | None = field(init=False, default=None)

    def __post_init__(self):
        z = lambda *s: torch.zeros(*s, dtype=ACC, device=self.device)  # noqa: E731
        self.S, self.R, self.C = z(self.m, self.n), z(self.m, self.m), z(self.n, self.n)
        if self.rotation_seed is not None:
            self.R_rot, self.C_rot = z(self.m, self.m), z(self.n, self.n)

    def add(self, W, model_seed: int | None = None) -> None:
        """Add one model's matrix (dense m×n tensor or LowRank), cast to float64."""
        if isinstance(W, LowRank):
            W = LowRank(W.B.to(self.device, ACC), W.A.to(self.device, ACC), W.scale)
        else:
            W = W.to(self.device, ACC)
        if tuple(W.shape) != (self.m, self.n):
            raise ValueError(f"shape {tuple(W.shape)} does not match {(self.m, self.n)}")
        P, Pc = row_gram(W), col_gram(W)
        self.S += dense(W)
        self.R += P
        self.C += Pc
        if self.rotation_seed is not None:
            ms = self.count if model_seed is None else model_seed
            g = torch.Generator().manual_seed((self.rotation_seed * 1_000_003 + ms) % (2**63))
            Q = haar_orthogonal(self.m, g, device=self.device)
            Rr = haar_orthogonal(self.n, g, device=self.device)
            self.R_rot += Q @ P @ Q.T
            self.C_rot += Rr.T @ Pc @ Rr
        self.count += 1

    @property
    def mean(self) -> torch.Tensor:
        return self.S / self.count

    def grams(self, center: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(G_row, G_col): centred as R − N μμᵀ and C − N μᵀμ, or the raw sums."""
        if not center:
            return self.R.clone(), self.C.clone()
        mu = self.mean
        return self.R - self.count * (mu @ mu.T), self.C - self.count * (mu.T @ mu)


def center_gram(K: torch.Tensor) -> torch.Tensor:
    """H K H with H = I − 11ᵀ/N: the Gram of the centred models from the raw Gram."""
    return K - K.mean(0, keepdim=True) - K.mean(1, keepdim=True) + K.mean()


def _grown(known: torch.Tensor | None, N: int, device) -> tuple[torch.Tensor, int]:
    K = torch.zeros(N, N, dtype=ACC, device=device)
    N0 = 0 if known is None else known.shape[0]
    if N0:
        K[:N0, :N0] = known.to(device, ACC)
    return K, N0


def model_gram_lowrank(mats: list[LowRank], known: torch.Tensor | None = None) -> torch.Tensor:
    """K_ij = ⟨ΔW_i, ΔW_j⟩ = s_i s_j tr((B_iᵀ B_j)(A_j A_iᵀ)) from the factors alone.

    ``known``: the Gram of the first N0 models, kept; only pairs with a new model are computed.
    """
    N = len(mats)
    K, N0 = _grown(known, N, mats[0].B.device)
    for i, Li in enumerate(mats):
        for j in range(max(i, N0), N):
            Lj = mats[j]
            v = Li.scale * Lj.scale * torch.sum((Li.B.T @ Lj.B) * (Li.A @ Lj.A.T))
            K[i, j] = K[j, i] = v
    return K


def model_gram_dense(read_rows, N: int, m: int, n: int, block_rows: int, device="cpu",
                     known: torch.Tensor | None = None) -> torch.Tensor:
    """K_ij = ⟨W_i, W_j⟩ accumulated over row blocks: K += Σ_blocks V_b V_bᵀ.

    ``read_rows(i, rows)`` returns rows ``rows`` of model i; V_b stacks the flattened row
    block of every model (N × block_rows·n), so memory is N·block_rows·n, not N·m·n. With
    ``known`` (the Gram of the first N0 models) only the columns of the new models are
    computed, K[:, N0:] += V_b V_b[N0:]ᵀ; the old models are still read for these cross terms.
    """
    K, N0 = _grown(known, N, device)
    for r0 in range(0, m, block_rows):
        rows = slice(r0, min(m, r0 + block_rows))
        V = torch.stack([read_rows(i, rows).to(device, ACC).reshape(-1) for i in range(N)])
        K[:, N0:].addmm_(V, V[N0:].T)
    K[N0:, :N0] = K[:N0, N0:].T
    return K


def eigh_desc(G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (descending, round-off negatives clipped to 0) and eigenvectors of a PSD
    Gram; each eigenvector's sign is fixed so that its largest-magnitude entry is positive."""
    G = (G + G.T) / 2
    lam, U = torch.linalg.eigh(G)
    lam, U = lam.flip(0).clamp_min(0), U.flip(1)
    idx = U.abs().argmax(0)
    signs = torch.sign(U[idx, torch.arange(U.shape[1], device=U.device)])
    signs[signs == 0] = 1
    return lam, U * signs


def explained_variance(eigs: torch.Tensor) -> torch.Tensor:
    """Cumulative explained variance: entry k−1 is Σ_{j≤k} λ_j / Σ_j λ_j."""
    total = eigs.sum()
    if total <= 0:
        return torch.zeros_like(eigs)
    return torch.cumsum(eigs, 0) / total


@dataclass
class Subspace:
    """The result for one target: mean, leading mode factors, spectra and nulls."""

    mean: torch.Tensor           # m×n (zeros when not centred)
    U_row: torch.Tensor          # m×min(k_max, m), orthonormal columns, descending eigenvalue
    U_col: torch.Tensor          # n×min(k_max, n)
    eig_row: torch.Tensor        # all m eigenvalues of G_row
    eig_col: torch.Tensor        # all n eigenvalues of G_col
    eig_model: torch.Tensor      # N eigenvalues of G_model
    gram_model: torch.Tensor     # G_model (N×N)
    eig_row_uncentered: torch.Tensor
    eig_col_uncentered: torch.Tensor
    nulls: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def k_max(self) -> int:
        return max(self.U_row.shape[1], self.U_col.shape[1])


def decompose(sums: ModeSums, K: torch.Tensor, max_k: int, center: bool = True) -> Subspace:
    """Eigendecompose the mode Grams built from ``sums`` and the raw model Gram ``K``."""
    G_row, G_col = sums.grams(center)
    lam_r, U_r = eigh_desc(G_row)
    lam_c, U_c = eigh_desc(G_col)
    G_model = center_gram(K) if center else K
    lam_m, _ = eigh_desc(G_model)
    nulls = {}
    if sums.R_rot is not None:
        nulls["rotation_row"] = eigh_desc(sums.R_rot)[0]
        nulls["rotation_col"] = eigh_desc(sums.C_rot)[0]
    return Subspace(
        mean=sums.mean if center else torch.zeros_like(sums.S),
        U_row=U_r[:, :max_k].contiguous(), U_col=U_c[:, :max_k].contiguous(),
        eig_row=lam_r, eig_col=lam_c, eig_model=lam_m, gram_model=G_model,
        eig_row_uncentered=eigh_desc(sums.R)[0], eig_col_uncentered=eigh_desc(sums.C)[0],
        nulls=nulls)


def add_gaussian(sums: ModeSums, model_seed: int) -> None:
    """Add one unit-variance i.i.d. Gaussian m×n matrix, drawn from a generator seeded by the
    model, to the null's sums (so the null grows with the collection like the data)."""
    g = torch.Generator().manual_seed(model_seed % (2**63))
    sums.add(torch.randn(sums.m, sums.n, generator=g, dtype=torch.float32))


def gaussian_null_spectra(sums: ModeSums, variance: float, center: bool = True) -> dict[str, torch.Tensor]:
    """Row/col spectra of the Gaussian null with the data's variance: the sums hold
    unit-variance draws, and the Gram of σZ is σ² times the Gram of Z."""
    G_row, G_col = sums.grams(center)
    return {"gaussian_row": variance * eigh_desc(G_row)[0], "gaussian_col": variance * eigh_desc(G_col)[0]}


def gaussian_null(N: int, m: int, n: int, variance: float, seed: int, center: bool = True,
                  device="cpu") -> dict[str, torch.Tensor]:
    """Centred row/col spectra of N i.i.d. Gaussian m×n matrices with the given variance,
    computed by the same sums as the data (so the same finite-N effects apply)."""
    sums = ModeSums(m, n, device=device)
    for i in range(N):
        add_gaussian(sums, seed * 1_000_003 + i)
    return gaussian_null_spectra(sums, variance, center)
