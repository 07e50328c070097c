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

Large modes (randomized, one pass): when a mode's dimension d exceeds a threshold and only the
leading k directions are wanted, its d×d Gram is never formed. Instead the same streaming pass
accumulates the sketch Y = G Ω = Σ_i X_iᵀ (X_i Ω) (d×l, Ω a fixed orthonormal d×l test matrix,
l = k + oversampling), and the Nyström approximation Ĝ = Y (Ωᵀ Y)⁺ Yᵀ gives the leading
eigenpairs (Tropp, Yurtsever, Udell, Cevher 2017, "Fixed-rank approximation of a positive-
semidefinite matrix from streaming data"; their bound E‖G − Ĝ‖_* ≤ (1 + r/(l − r − 1))·Σ_{j>r} λ_j
for r < l − 1 is tested). Centering is applied to the sketch: (G − Nμᵀμ)Ω = Y − Nμᵀ(μΩ).
Explained variance then divides by the exact total energy Σ_i ‖X_i‖², kept as a scalar sum.

Two-pass refinement of a sketched column mode: the second pass over row blocks (the one the
model Gram needs anyway) also accumulates Z = G Q = Σ_i Σ_b X_{i,b}ᵀ (X_{i,b} Q), with
Q = orth(G Ω) from the first pass and X_{i,b} = W_{i,b} − μ_b centred exactly (μ is known by
then, so nothing cancels). The Nyström approximation with test matrix Q,
Ĝ = Z (Qᵀ Z)⁺ Zᵀ = G^{1/2} P G^{1/2}, P the projector onto range(G^{3/2} Ω), is the randomized
range finder with one power iteration applied to M = G^{1/2}: ‖G − Ĝ‖ = ‖(I − P) M‖², and
Halko, Martinsson, Tropp (2011, Cor. 10.10) bound E‖(I − P) M‖ ≤ C^{1/3} √λ_{k+1} with
C = 1 + √(k/(p−1)) + e·√(k+p)/p·√(d−k), l = k + p (tested). The row mode has no such second
product in row blocks (X_i X_iᵀ Q needs all of X_i at once), so a sketched row mode is one-pass.

Precision: every sum and Gram is accumulated in float64. By default the per-model products
are float64 too; ``product_dtype=float32`` computes them in float32 (the products about twice
as fast on a CPU, the whole stage ~1.2×; each Gram entry then carries a relative error of
about 2⁻²⁴·√n, which the tests bound against float64) before adding them to the float64 sums. That error is relative to the
products formed, so products of raw W_i would lose, in R − Nμμᵀ, every digit that cancels
(fine-tunes of one checkpoint differ from their mean by ~10⁻³ of their size: a 0.7% error).
With float32 products the sums are therefore taken of W_i − c, c the first model added (kept in
float64): S' = Σ (W_i − c), R' = Σ (W_i − c)(W_i − c)ᵀ, C', Y'. The centred Grams are
R' − N μ'μ'ᵀ with μ' = S'/N (nothing large cancels: W_i − c is of the size of X_i), the mean is
c + μ', and the raw ones are R = R' + c S'ᵀ + S' cᵀ + N c cᵀ (likewise C and the sketches), formed
once in float64. The second pass of a sketched column mode multiplies exactly centred blocks.

Nulls (same shapes, same N):

- Gaussian: i.i.d. entries with the variance of the centred data, through the same code.
  Weak: any anisotropic single matrix beats it.
- Rotation: W_i → Q_i W_i R_i with Haar-random orthogonal Q_i, R_i. Each model keeps its
  singular values; only the alignment between models is destroyed. Compared on uncentred
  spectra (centering after rotation mixes in the lost mean). Its draws need only each model's
  singular values (``core.sharing``), which the stage keeps from the streamed pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .lowrank import LowRank

ACC = torch.float64  # accumulation dtype of every sum and Gram


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


def add_gram(G: torch.Tensor, A: torch.Tensor, blocks: int = 4) -> None:
    """G += A Aᵀ (G float64, d×d; A d×e in any float dtype), computing only the lower block
    triangle of the product (b(b+1)/2 of b² blocks: ~35% fewer operations for b = 4, a
    symmetric rank-k update) and mirroring it into the upper triangle."""
    d = A.shape[0]
    h = -(-d // blocks)
    T = G if A.dtype == G.dtype else torch.zeros(d, d, dtype=A.dtype, device=A.device)
    for r0 in range(0, d, h):
        T[r0:, r0:r0 + h].addmm_(A[r0:], A[r0:r0 + h].T)
    for r0 in range(0, d, h):
        T[r0:r0 + h, r0 + h:] = T[r0 + h:, r0:r0 + h].T
    if T is not G:
        G += T


def dense(W) -> torch.Tensor:
    return W.dense() if isinstance(W, LowRank) else W


@dataclass
class ModeSums:
    """Additive sums over models for one target: N, Σ W, Σ W Wᵀ, Σ Wᵀ W (float64; of W − c
    with float32 products, ``shift`` c, see Precision).

    Each model only adds to the sums, so sums kept from earlier models take new ones (the
    stage's cache: adding models reads only the new ones).
    """

    m: int
    n: int
    device: str = "cpu"
    sketch_row: int = 0  # l > 0: the row mode is sketched (Y_row = G_row Ω_row, m×l), not formed
    sketch_col: int = 0
    sketch_seed: int = 0
    product_dtype: torch.dtype = ACC  # float32: per-model products in float32, sums still float64
    count: int = 0
    sq: float = 0.0  # Σ ‖W_i‖², the total energy (exact whatever the modes)
    S: torch.Tensor = field(init=False)
    R: torch.Tensor | None = field(init=False, default=None)
    C: torch.Tensor | None = field(init=False, default=None)
    Y_row: torch.Tensor | None = field(init=False, default=None)
    Y_col: torch.Tensor | None = field(init=False, default=None)
    refined_col: tuple[torch.Tensor, torch.Tensor] | None = field(init=False, default=None)  # (Z, Q), not cached
    shift: torch.Tensor | None = field(init=False, default=None)  # c: the sums are of W − c (see Precision)
    _omegas: dict = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self):
        z = lambda *s: torch.zeros(*s, dtype=ACC, device=self.device)  # noqa: E731
        self.S = z(self.m, self.n)
        if self.sketch_row:
            self.Y_row = z(self.m, self.sketch_row)
        else:
            self.R = z(self.m, self.m)
        if self.sketch_col:
            self.Y_col = z(self.n, self.sketch_col)
        else:
            self.C = z(self.n, self.n)

    def omega(self, mode: str) -> torch.Tensor:
        """The fixed orthonormal test matrix of a sketched mode (from ``sketch_seed``; made
        once, then kept: it is the same for every model)."""
        d, l = (self.m, self.sketch_row) if mode == "row" else (self.n, self.sketch_col)
        if mode not in self._omegas:
            g = torch.Generator().manual_seed(self.sketch_seed * 2 + (mode == "col"))
            self._omegas[mode] = random_orthonormal(d, l, g, device=self.device)
        return self._omegas[mode]

    def add(self, W) -> None:
        """Add one model's matrix (dense m×n tensor or LowRank): Σ W and Σ‖W‖² in float64, the
        Gram products (or sketches) in ``product_dtype``, added to float64 sums."""
        pd = self.product_dtype
        if isinstance(W, LowRank):
            W = LowRank(W.B.to(self.device, ACC), W.A.to(self.device, ACC), W.scale)
            D = W.dense()
            Wp = W if pd == ACC else LowRank(W.B.to(pd), W.A.to(pd), W.scale)
        else:
            src = W.to(self.device)
            D = src.to(ACC)
            Wp = D if pd == ACC else src.to(pd)  # from the source: no float64 round trip
        if tuple(D.shape) != (self.m, self.n):
            raise ValueError(f"shape {tuple(D.shape)} does not match {(self.m, self.n)}")
        if self.count == 0 and self.shift is None and pd != ACC and not isinstance(Wp, LowRank):
            self.shift = D.clone()  # float32 products of W − c: see Precision
        self.sq += float(torch.dot(D.reshape(-1), D.reshape(-1)))
        if self.shift is not None:
            if isinstance(Wp, LowRank):
                raise ValueError("shifted sums take dense matrices only")
            D = D - self.shift
            Wp = D.to(pd)
        self.S += D
        Dp = dense(Wp)
        if self.sketch_row:
            self.Y_row += (Dp @ (Dp.T @ self.omega("row").to(pd))).to(ACC)
        elif not isinstance(Wp, LowRank):
            add_gram(self.R, Dp)
        else:
            self.R += row_gram(Wp).to(ACC)
        if self.sketch_col:
            self.Y_col += (Dp.T @ (Dp @ self.omega("col").to(pd))).to(ACC)
        elif not isinstance(Wp, LowRank):
            add_gram(self.C, Dp.T)
        else:
            self.C += col_gram(Wp).to(ACC)
        self.count += 1

    def total(self, center: bool = True) -> float:
        """Σ_i ‖X_i‖²: the trace of every mode Gram (centred: Σ‖W_i‖² − N‖μ‖²)."""
        return self.sq - (self.count * float((self.mean ** 2).sum()) if center else 0.0)

    def mode_spectrum(self, mode: str, center: bool = True, vectors: bool = True):
        """(eigenvalues, eigenvectors) of a mode Gram, descending: exact, or Nyström from the
        sketch for a sketched mode (then only l pairs; two-pass for a refined column mode).
        ``vectors=False``: eigenvalues only (eigenvectors None where that is cheaper)."""
        sketch = self.Y_row if mode == "row" else self.Y_col
        if sketch is None:
            G = self.gram(mode, center)
            return eigh_desc(G) if vectors else (eigvals_desc(G), None)
        if mode == "col" and center and self.refined_col is not None:
            return nystrom(*self.refined_col)
        Om = self.omega(mode)
        mu, N, c = self.held_mean, self.count, self.shift
        if center:
            sketch = sketch - N * ((mu @ (mu.T @ Om)) if mode == "row" else (mu.T @ (mu @ Om)))
        elif c is not None:  # the raw sketch from the shifted one
            S = self.S
            sketch = sketch + ((c @ (S.T @ Om) + S @ (c.T @ Om) + N * (c @ (c.T @ Om))) if mode == "row"
                               else (c.T @ (S @ Om) + S.T @ (c @ Om) + N * (c.T @ (c @ Om))))
        return nystrom(sketch, Om)

    @property
    def held_mean(self) -> torch.Tensor:
        """The mean of what the sums hold: μ, or μ' = μ − c when they are shifted."""
        return self.S / self.count

    @property
    def mean(self) -> torch.Tensor:
        return self.held_mean if self.shift is None else self.held_mean + self.shift

    def refinement(self) -> ColumnRefinement:
        """The second-pass accumulator of the sketched column mode: Q = orth(G_c Ω) from the
        centred one-pass sketch; feed it every model's row blocks, then ``finish``."""
        Om = self.omega("col")
        mu = self.held_mean
        Y = self.Y_col - self.count * (mu.T @ (mu @ Om))
        Q = fix_signs(torch.linalg.qr(Y)[0])
        return ColumnRefinement(self, Q, self.mean, self.product_dtype)

    def gram(self, mode: str, center: bool = True) -> torch.Tensor:
        """G_row = R − N μμᵀ or G_col = C − N μᵀμ (centred), or the raw sum; exact modes only."""
        raw = self.R if mode == "row" else self.C
        if raw is None:
            raise ValueError(f"the {mode} mode is sketched: it has no Gram (use mode_spectrum)")
        N, c, S = self.count, self.shift, self.S
        if center:
            mu = self.held_mean
            return raw - N * ((mu @ mu.T) if mode == "row" else (mu.T @ mu))
        if c is None:
            return raw.clone()
        return raw + ((c @ S.T + S @ c.T + N * (c @ c.T)) if mode == "row" else (c.T @ S + S.T @ c + N * (c.T @ c)))

    def grams(self, center: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(G_row, G_col), see ``gram``."""
        return self.gram("row", center), self.gram("col", center)


@dataclass
class ColumnRefinement:
    """Z = Σ_i Σ_b X_{i,b}ᵀ (X_{i,b} Q) over row blocks of centred models (see the module
    docstring); ``finish`` hands (Z, Q) to the sums, whose centred column spectrum is then
    the two-pass Nyström approximation."""

    sums: ModeSums
    Q: torch.Tensor
    mean: torch.Tensor
    product_dtype: torch.dtype
    Z: torch.Tensor = field(init=False)

    def __post_init__(self):
        self.Z = torch.zeros_like(self.Q)
        self._Qp = self.Q.to(self.product_dtype)

    def add_rows(self, rows: slice, X: torch.Tensor) -> None:
        """X: rows ``rows`` of the N centred models (N × r × n, float64), e.g. the blocks of
        ``weightspace.stream.model_gram_dense`` with ``center=mean``."""
        X = X.reshape(-1, X.shape[-1]).to(self.product_dtype)
        self.Z += (X.T @ (X @ self._Qp)).to(ACC)

    def finish(self) -> None:
        self.sums.refined_col = (self.Z, self.Q)


def nystrom(Y: torch.Tensor, Omega: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenpairs of the Nyström approximation Y (Ωᵀ Y)⁺ Yᵀ of a PSD G with Y = G Ω.

    The numerically stable form of Tropp et al. (2017, Alg. 3): shift by ν = eps·‖Y‖·√d, then
    B = Ωᵀ Y_ν, C = chol(B), E = Y_ν C⁻ᵀ, E = U Σ Vᵀ, λ = max(Σ² − ν, 0). Returns (λ, U),
    descending, signs fixed by ``fix_signs``.
    """
    d = Y.shape[0]
    nu = torch.finfo(Y.dtype).eps * float(torch.linalg.norm(Y)) * d ** 0.5
    Yn = Y + nu * Omega
    B = Omega.T @ Yn
    L = torch.linalg.cholesky((B + B.T) / 2)
    E = torch.linalg.solve_triangular(L, Yn.T, upper=False).T
    U, sig, _ = torch.linalg.svd(E, full_matrices=False)
    lam = (sig ** 2 - nu).clamp_min(0)
    return lam, fix_signs(U)


def center_gram(K: torch.Tensor) -> torch.Tensor:
    """H K H with H = I − 11ᵀ/N: the Gram of the centred models from the raw Gram."""
    return K - K.mean(0, keepdim=True) - K.mean(1, keepdim=True) + K.mean()


def grown(known: torch.Tensor | None, N: int, device) -> tuple[torch.Tensor, int]:
    K = torch.zeros(N, N, dtype=ACC, device=device)
    N0 = 0 if known is None else known.shape[0]
    if N0:
        K[:N0, :N0] = known.to(device, ACC)
    return K, N0


# ----------------------------------------------------------------------------- model-Gram sketch
def _hashes(start: int, stop: int, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bucket (0..width−1, width a power of two) and sign (±1) of the flat indices start..stop−1
    by multiply-add-shift hashing (Dietzfelbinger): h(k) = the top log₂(width) bits of
    (a·k + b) mod 2⁶⁴, σ(k) from the top bit of (c·k + d) mod 2⁶⁴, with a, c odd and a, b, c, d
    drawn from ``seed``. A function of the index alone, so the same index gets the same bucket
    and sign whatever the row blocks it is read in; int64 products wrap mod 2⁶⁴."""
    if width & (width - 1) or width < 2:
        raise ValueError(f"sketch width {width} must be a power of two ≥ 2")
    g = torch.Generator().manual_seed(seed % (2**63))
    a, b, c, d = (int(v) for v in torch.randint(-(2**62), 2**62, (4,), generator=g, dtype=torch.int64))
    a, c = a | 1, c | 1
    k = torch.arange(start, stop, dtype=torch.int64)
    bits = width.bit_length() - 1
    buckets = ((k * a + b) >> (64 - bits)) & (width - 1)
    signs = 1.0 - 2.0 * (((k * c + d) >> 63) & 1).to(ACC)
    return buckets, signs


def add_hashed_sketch(Z: torch.Tensor, X: torch.Tensor, start: int, seed: int) -> None:
    """Z (N × w) += the count sketch of rows of N flattened matrices X (N × L) that begin at flat
    index ``start``: z_b += Σ_{k: h(k)=b} σ(k) x_k. With hash buckets h and signs σ drawn
    independently of the data, E⟨z(X), z(Y)⟩ = ⟨X, Y⟩ and the error of one inner product has
    standard deviation at most √(2/w)·‖X‖‖Y‖ (Charikar et al.; Weinberger et al.): the model
    Gram of new models against old ones from w numbers per model, without reading the old
    models again. Additive over row blocks in any order."""
    buckets, signs = _hashes(start, start + X.shape[1], Z.shape[1], seed)
    Z.index_add_(1, buckets.to(Z.device), X.to(ACC) * signs.to(X.device))


def sketched_gram(Za: torch.Tensor, Zb: torch.Tensor, ra: torch.Tensor, rb: torch.Tensor, ref_sq: float) -> torch.Tensor:
    """⟨W_i, W_j⟩ ≈ ⟨z_i, z_j⟩ + r_i + r_j − ‖R‖², with z the sketches of W − R for one reference
    R (the basis mean when the sketches began) and r_i = ⟨W_i, R⟩ exact: the sketch error is
    then relative to ‖W_i − R‖‖W_j − R‖, the models' spread, not their norm."""
    return Za @ Zb.T + ra[:, None] + rb[None, :] - ref_sq


def model_gram_lowrank(mats: list[LowRank], known: torch.Tensor | None = None) -> torch.Tensor:
    """K_ij = ⟨ΔW_i, ΔW_j⟩ = s_i s_j tr((B_iᵀ B_j)(A_j A_iᵀ)) from the factors alone.

    ``known``: the Gram of the first N0 models, kept; only pairs with a new model are computed.
    """
    N = len(mats)
    K, N0 = grown(known, N, mats[0].B.device)
    for i, Li in enumerate(mats):
        for j in range(max(i, N0), N):
            Lj = mats[j]
            v = Li.scale * Lj.scale * torch.sum((Li.B.T @ Lj.B) * (Li.A @ Lj.A.T))
            K[i, j] = K[j, i] = v
    return K


def fix_signs(U: torch.Tensor) -> torch.Tensor:
    """Flip each column so that its largest-magnitude entry is positive (a deterministic sign
    for eigenvectors, which are defined only up to sign)."""
    idx = U.abs().argmax(0)
    signs = torch.sign(U[idx, torch.arange(U.shape[1], device=U.device)])
    signs[signs == 0] = 1
    return U * signs


def eigh_desc(G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (descending, round-off negatives clipped to 0) and eigenvectors of a PSD
    Gram; each eigenvector's sign is fixed so that its largest-magnitude entry is positive."""
    G = (G + G.T) / 2
    lam, U = torch.linalg.eigh(G)
    lam, U = lam.flip(0).clamp_min(0), U.flip(1)
    return lam, fix_signs(U)


def eigvals_desc(G: torch.Tensor) -> torch.Tensor:
    """Eigenvalues only (descending, round-off negatives clipped): cheaper than ``eigh_desc``."""
    return torch.linalg.eigvalsh((G + G.T) / 2).flip(0).clamp_min(0)


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
    total: float = 0.0              # Σ_i ‖X_i‖², the trace of every centred mode Gram
    total_uncentered: float = 0.0   # Σ_i ‖W_i‖²
    null_gaussian_total: float | None = None
    nulls: dict[str, torch.Tensor] = field(default_factory=dict)
    methods: dict[str, str] = field(default_factory=dict)  # how each mode was computed
    sharing: dict | None = None  # the sharing test's result (see core.sharing), set by the stage

    @property
    def k_max(self) -> int:
        return max(self.U_row.shape[1], self.U_col.shape[1])


def decompose(sums: ModeSums, K: torch.Tensor, max_k: int, center: bool = True) -> Subspace:
    """Eigendecompose the mode Grams built from ``sums`` (or their sketches) and the raw model
    Gram ``K``."""
    lam_r, U_r = sums.mode_spectrum("row", center)
    lam_c, U_c = sums.mode_spectrum("col", center)
    G_model = center_gram(K) if center else K
    lam_m, _ = eigh_desc(G_model)
    return Subspace(
        mean=sums.mean if center else torch.zeros_like(sums.S),
        U_row=U_r[:, :max_k].contiguous(), U_col=U_c[:, :max_k].contiguous(),
        eig_row=lam_r, eig_col=lam_c, eig_model=lam_m, gram_model=G_model,
        eig_row_uncentered=sums.mode_spectrum("row", False, vectors=False)[0],
        eig_col_uncentered=sums.mode_spectrum("col", False, vectors=False)[0],
        total=sums.total(center), total_uncentered=sums.total(False))


def add_gaussian(sums: ModeSums, model_seed: int) -> None:
    """Add one unit-variance i.i.d. Gaussian m×n matrix, drawn from a generator seeded by the
    model, to the null's sums (so the null grows with the collection like the data)."""
    g = torch.Generator().manual_seed(model_seed % (2**63))
    sums.add(torch.randn(sums.m, sums.n, generator=g, dtype=torch.float32))


def gaussian_null_spectra(sums: ModeSums, variance: float, center: bool = True) -> dict[str, torch.Tensor]:
    """Row/col spectra of the Gaussian null with the data's variance: the sums hold
    unit-variance draws, and the Gram of σZ is σ² times the Gram of Z."""
    return {f"gaussian_{mode}": variance * sums.mode_spectrum(mode, center, vectors=False)[0] for mode in ("row", "col")}


def gaussian_null(N: int, m: int, n: int, variance: float, seed: int, center: bool = True,
                  device="cpu") -> dict[str, torch.Tensor]:
    """Centred row/col spectra of N i.i.d. Gaussian m×n matrices with the given variance,
    computed by the same sums as the data (so the same finite-N effects apply)."""
    sums = ModeSums(m, n, device=device)
    for i in range(N):
        add_gaussian(sums, seed * 1_000_003 + i)
    return gaussian_null_spectra(sums, variance, center)
