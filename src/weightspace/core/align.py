r"""Representation alignment between models (the Platonic Representation Hypothesis).

Every metric compares two feature matrices X (n×d₁) and Y (n×d₂) of the same n probe inputs,
row i of both being the representation of input i. Features are prepared by ``prepare``:
optionally clamped at a quantile of their absolute values (outliers), then each row
l2-normalised, as in Huh et al. (2024). Definitions follow their metrics.py:

- ``mutual_knn``: mean over i of |N_X(i) ∩ N_Y(i)| / k, N(i) the k nearest neighbours of i by
  inner product (self excluded). 1 for identical neighbourhoods, ≈ k/(n−1) by chance.
- ``cycle_knn``: fraction of i such that i is among the k neighbours in X of one of its k
  neighbours in Y (X → Y → X cycle). Not symmetric.
- ``cka``: HSIC(K, L) / √(HSIC(K, K) HSIC(L, L)), HSIC(K, L) = tr(K H L H) (biased), H = I − 11ᵀ/n,
  K = X Xᵀ (linear) or exp(−‖xᵢ − xⱼ‖² / (2σ² m²)) (rbf, m the median pairwise distance).
- ``unbiased_cka``: the same with the unbiased HSIC of Song et al. (2012).
- ``cknna``: CKA restricted to mutual neighbour pairs: K and L masked to the pairs (i, j) with
  j among the k nearest of i in both, unbiased HSIC (Huh et al.'s CKNNA). The mask is not a
  symmetric matrix, so swapping X and Y changes the score slightly (≲1e-3 relative).
- ``svcca``: mean canonical correlation between the top ``cca_dim`` principal directions of X
  and of Y (Raghu et al., 2017).

Deliberate deviations from Huh et al.'s code (each small, each tested or measured):
CKNNA's denominator adds 1e-12, not their 1e-6, which is not negligible where the HSICs are
small: it moves unbiased CKA and CKNNA by up to 6.4e-4, and by 1.7e-2 on random-initialised
MiniLM layers (measured in the review of issue 27); SVCCA is exact CCA of the principal
subspaces (orthonormal bases' singular values), without their per-column rescaling; the RBF
bandwidth is set per side from that side's median distance. The 0.95 clamp quantile is one
threshold over a model's whole layer tensor, as in their code (an earlier version of ours took
it from the first 2^24 values only). Brute-force references (sets and loops) for mutual and cycle k-NN and CKNNA are in
tests/test_align.py.

Invariances (tested): linear CKA, unbiased CKA and SVCCA are invariant to orthogonal
transforms and isotropic scaling of either side; mutual_knn, cycle_knn and CKNNA to any
per-sample positive scaling (they see l2-normalised rows) and to orthogonal transforms.
"""

from __future__ import annotations

import torch

METRICS = ("mutual_knn", "cycle_knn", "cka", "cka_rbf", "unbiased_cka", "cknna", "svcca")


def prepare(feats: torch.Tensor, clamp_quantile: float | None = None) -> torch.Tensor:
    """Clamp |values| at their ``clamp_quantile`` quantile over the whole layer (if given; Huh
    et al. clamp at 0.95), then l2-normalise rows. numpy's quantile (linear interpolation, as
    torch's) has no size limit, so no value is left out however large the layer."""
    import numpy as np

    x = feats.double()
    if clamp_quantile is not None:
        q = float(np.quantile(x.abs().numpy(), clamp_quantile))
        x = x.clamp(-q, q)
    return torch.nn.functional.normalize(x, dim=-1)


# Every metric is pair(side(X), side(Y)): ``side`` holds what depends on one model only (its
# neighbours, its kernel), so comparing N models computes it N times, not N² times.
def knn(X: torch.Tensor, k: int) -> torch.Tensor:
    """n×k indices of each row's k nearest rows by inner product, itself excluded."""
    S = X @ X.T
    S.fill_diagonal_(float("-inf"))
    return S.topk(k, dim=1).indices


def knn_overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    """mutual_knn from neighbour lists: mean_i |N_X(i) ∩ N_Y(i)| / k."""
    return float((a.unsqueeze(2) == b.unsqueeze(1)).any(2).double().mean())


def knn_cycle(a: torch.Tensor, b: torch.Tensor) -> float:
    """cycle_knn from neighbour lists: mean_i [i ∈ ∪_{j ∈ N_Y(i)} N_X(j)]."""
    return float((a[b] == torch.arange(len(a)).view(-1, 1, 1)).flatten(1).any(1).double().mean())


def center(K: torch.Tensor) -> torch.Tensor:
    """H K H, H = I − 11ᵀ/n."""
    return K - K.mean(0, keepdim=True) - K.mean(1, keepdim=True) + K.mean()


def hsic_biased(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """tr(K H L H) = Σ (H K H) ⊙ L."""
    return (center(K) * L).sum()


def hsic_unbiased(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """Song et al. (2012): with K̃, L̃ the kernels with zero diagonals,
    [tr(K̃ L̃) + 1ᵀK̃1 · 1ᵀL̃1 / ((n−1)(n−2)) − 2/(n−2) · 1ᵀK̃L̃1] / (n(n−3));
    1ᵀK̃L̃1 = (1ᵀK̃)(L̃1), so the cost is O(n²)."""
    n = K.shape[0]
    Kt, Lt = K.clone().fill_diagonal_(0), L.clone().fill_diagonal_(0)
    return ((Kt * Lt.T).sum() + Kt.sum() * Lt.sum() / ((n - 1) * (n - 2))
            - 2 * (Kt.sum(0) @ Lt.sum(1)) / (n - 2)) / (n * (n - 3))


def rbf_kernel(X: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """exp(−‖xᵢ − xⱼ‖² / (2 (σ m)²)), m the median pairwise distance."""
    D2 = torch.cdist(X, X).pow(2)
    med = D2[~torch.eye(len(X), dtype=torch.bool)].median().sqrt()
    return torch.exp(-D2 / (2 * (sigma * med) ** 2))


def kernel_alignment(K: torch.Tensor, L: torch.Tensor, hsic=hsic_biased) -> float:
    """CKA of two kernels: HSIC(K, L) / √(HSIC(K, K) HSIC(L, L))."""
    return float(hsic(K, L) / (hsic(K, K) * hsic(L, L)).sqrt())


def unit_kernel(K: torch.Tensor, hsic=hsic_biased) -> torch.Tensor:
    """K / √HSIC(K, K), centred first for the biased HSIC (tr(KHLH) = Σ HKH ⊙ HLH): both
    HSICs are bilinear, so CKA(K, L) = HSIC(unit K, unit L), one product per pair."""
    if hsic is hsic_biased:
        K = center(K)
    return K / hsic(K, K).sqrt()


def knn_mask(K: torch.Tensor, k: int) -> torch.Tensor:
    """M_ij = 1 if j is among the k largest K_ij of row i (j ≠ i)."""
    top = K.clone().fill_diagonal_(float("-inf")).topk(k, dim=1).indices
    return torch.zeros_like(K).scatter_(1, top, 1.0)


def masked_hsic(K: torch.Tensor, Mk: torch.Tensor, L: torch.Tensor, Ml: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC(M ⊙ K, M ⊙ L), M = Mk ⊙ Ml the mutual k-NN mask of the two sides."""
    M = Mk * Ml
    return hsic_unbiased(M * K, M * L)


def masked_alignment(K: torch.Tensor, Mk: torch.Tensor, L: torch.Tensor, Ml: torch.Tensor) -> float:
    """CKNNA from kernels and their k-NN masks: sim(K, L) / √(sim(K, K) sim(L, L)),
    sim = ``masked_hsic``."""
    return float(masked_hsic(K, Mk, L, Ml)
                 / ((masked_hsic(K, Mk, K, Mk) * masked_hsic(L, Ml, L, Ml)).sqrt() + 1e-12))


def principal_basis(X: torch.Tensor, dim: int) -> torch.Tensor:
    """An orthonormal basis (n×d) of the top ``dim`` principal components' scores of X."""
    U, s, _ = torch.linalg.svd(X - X.mean(0), full_matrices=False)
    return U[:, :min(dim, int((s > s[0] * 1e-10).sum()))]


def mean_canonical_correlation(Qa: torch.Tensor, Qb: torch.Tensor) -> float:
    """Canonical correlations of two orthonormal bases = singular values of Qaᵀ Qb; their mean."""
    return float(torch.linalg.svdvals(Qa.T @ Qb).clamp(max=1).mean())


def sides(metric: str, X: torch.Tensor, topk: int = 10, cca_dim: int = 10):
    """What one metric needs of one feature matrix (normalised by its own self-similarity)."""
    if metric in ("mutual_knn", "cycle_knn"):
        return knn(X, topk)
    if metric == "cka":
        return unit_kernel(X @ X.T)
    if metric == "unbiased_cka":
        return unit_kernel(X @ X.T, hsic_unbiased)
    if metric == "cka_rbf":
        return unit_kernel(rbf_kernel(X))
    if metric == "cknna":
        K = X @ X.T
        M = knn_mask(K, topk)
        return K, M, masked_hsic(K, M, K, M).sqrt() + 1e-12
    if metric == "svcca":
        return principal_basis(X, cca_dim)
    raise ValueError(f"unknown alignment metric {metric!r}; available: {list(METRICS)}")


PAIR = {"mutual_knn": knn_overlap, "cycle_knn": knn_cycle,
        "cka": lambda A, B: float((A * B).sum()), "cka_rbf": lambda A, B: float((A * B).sum()),
        "unbiased_cka": lambda A, B: float(hsic_unbiased(A, B)),
        "cknna": lambda a, b: float(masked_hsic(a[0], a[1], b[0], b[1]) / (a[2] * b[2])),
        "svcca": mean_canonical_correlation}


def score(metric: str, X: torch.Tensor, Y: torch.Tensor, topk: int = 10, cca_dim: int = 10) -> float:
    """One metric by name on prepared features: PAIR[metric](sides(X), sides(Y))."""
    return PAIR[metric](sides(metric, X, topk, cca_dim), sides(metric, Y, topk, cca_dim))


# The metrics as functions of two feature matrices (the definitions in the module docstring).
def mutual_knn(X: torch.Tensor, Y: torch.Tensor, k: int = 10) -> float:
    """mean_i |N_X(i) ∩ N_Y(i)| / k."""
    return knn_overlap(knn(X, k), knn(Y, k))


def cycle_knn(X: torch.Tensor, Y: torch.Tensor, k: int = 10) -> float:
    """mean_i [i ∈ ∪_{j ∈ N_Y(i)} N_X(j)]."""
    return knn_cycle(knn(X, k), knn(Y, k))


def cka(X: torch.Tensor, Y: torch.Tensor, kernel: str = "linear", sigma: float = 1.0) -> float:
    """HSIC(K, L)/√(HSIC(K, K) HSIC(L, L)), biased HSIC; linear or rbf kernel."""
    if kernel == "linear":
        return kernel_alignment(X @ X.T, Y @ Y.T)
    if kernel == "rbf":
        return kernel_alignment(rbf_kernel(X, sigma), rbf_kernel(Y, sigma))
    raise ValueError(f"unknown CKA kernel {kernel!r}")


def unbiased_cka(X: torch.Tensor, Y: torch.Tensor) -> float:
    """Linear CKA with the unbiased HSIC estimator."""
    return kernel_alignment(X @ X.T, Y @ Y.T, hsic_unbiased)


def cknna(X: torch.Tensor, Y: torch.Tensor, k: int = 10) -> float:
    """CKA over mutual k-NN pairs (Huh et al.)."""
    K, L = X @ X.T, Y @ Y.T
    return masked_alignment(K, knn_mask(K, k), L, knn_mask(L, k))


def svcca(X: torch.Tensor, Y: torch.Tensor, cca_dim: int = 10) -> float:
    """Mean canonical correlation of the top ``cca_dim`` principal directions of X and of Y."""
    return mean_canonical_correlation(principal_basis(X, cca_dim), principal_basis(Y, cca_dim))


# ----------------------------------------------------------------------------- all pairs at once
# Most metrics are inner products of one vector per side, so the scores of every pair of two
# lists of sides are one Gram matrix, computed in blocks of ``block`` sides per operand (memory
# a few block·n² numbers whatever the number of models; CKNNA also block²·n). The pairwise ``PAIR`` functions are the
# reference the tests compare against (equal to 1e-10).
def u_center(K: torch.Tensor) -> torch.Tensor:
    """The U-centred kernel of Székely & Rizzo (2014): with K̃ = K with zero diagonal, s its row
    sums and S = Σ s, Ũ_ij = K̃_ij − (s_i + s_j)/(n−2) + S/((n−1)(n−2)) off the diagonal, 0 on it;
    ⟨Ũ(K), Ũ(L)⟩ / (n(n−3)) is the unbiased HSIC of Song et al. (``hsic_unbiased``)."""
    n = K.shape[0]
    Kt = K.clone().fill_diagonal_(0)
    s = Kt.sum(1)
    U = Kt - (s[:, None] + s[None, :]) / (n - 2) + s.sum() / ((n - 1) * (n - 2))
    return U.fill_diagonal_(0)


def _block(metric: str, sides: list) -> tuple:
    """What ``_scores`` needs of a block of sides, stacked: one row per side for the Gram
    metrics (mutual_knn: sparse neighbour indicators and n·k; cka, cka_rbf: unit centred kernels;
    unbiased_cka: U-centred unit kernels), the masked kernels for CKNNA, neighbour indicators
    for cycle_knn, principal bases for SVCCA."""
    n = sides[0].shape[0] if torch.is_tensor(sides[0]) else sides[0][0].shape[0]
    if metric == "mutual_knn":  # sparse: n·k ones per side, at i·n + j for j among i's neighbours
        from scipy.sparse import csr_matrix

        k = sides[0].shape[1]
        cols = torch.stack([(torch.arange(n)[:, None] * n + idx).flatten() for idx in sides]).numpy()
        rows = torch.arange(len(sides)).repeat_interleave(n * k).numpy()
        return csr_matrix((torch.ones(rows.size, dtype=torch.float64).numpy(), (rows, cols.ravel())),
                          shape=(len(sides), n * n)), n * k
    if metric == "cycle_knn":
        idx = torch.stack(list(sides))  # s × n × k
        ind = torch.zeros(len(sides), n, n, dtype=torch.bool).scatter_(2, idx, True)
        return ind, idx
    if metric == "unbiased_cka":
        return (torch.stack([u_center(A).flatten() for A in sides]) / (n * (n - 3)) ** 0.5,)
    if metric in ("cka", "cka_rbf"):
        return (torch.stack([A.flatten() for A in sides]),)
    if metric == "cknna":
        KM = torch.stack([K * M for K, M, _ in sides])
        M = torch.stack([M for _, M, _ in sides])
        S = (KM * M.transpose(1, 2)).flatten(1)
        norms = torch.tensor([float(x[2]) for x in sides], dtype=torch.float64)
        return KM, M, S, norms
    if metric == "svcca":
        return (sides,)
    raise ValueError(f"unknown alignment metric {metric!r}; available: {list(METRICS)}")


def _scores(metric: str, a: tuple, b: tuple) -> torch.Tensor:
    """Scores of every pair of two stacked blocks (``_block``).

    cycle_knn: i is reached back when I_a[j, i] for one of i's neighbours j in b (I: neighbour
    indicators): a gather of n·k entries per pair, not a product of n×n indicators.
    CKNNA: with M = M_a ⊙ M_b (self excluded, so zero diagonals) and symmetric kernels, the
    unbiased HSIC of M⊙K_a and M⊙K_b splits into pair-separable sums: tr = ⟨S_a, S_b⟩ with
    S = K ⊙ M ⊙ Mᵀ; 1ᵀ(M⊙K_a)1 = ⟨M_a⊙K_a, M_b⟩; and 1ᵀ(M⊙K_a)(M⊙K_b)1 = Σ_j c_j r_j with
    c_j = Σ_i (M_a⊙K_a)_ij (M_b)_ij, r_j = Σ_l (M_a)_jl (M_b⊙K_b)_jl (batched products per j;
    gathers at the n·k positions of the masks instead measured 1.7× slower on a CPU).
    SVCCA: batched singular values of Q_aᵀ Q_b."""
    if metric == "mutual_knn":  # Σ_i |N_a(i) ∩ N_b(i)| / (n k): a sparse product of 0/1 rows
        return torch.from_numpy((a[0] @ b[0].T).toarray()) / a[1]
    if metric in ("cka", "cka_rbf", "unbiased_cka"):
        return a[0] @ b[0].T
    if metric == "cycle_knn":
        (Ia, _), (_, idx_b) = a, b
        n = Ia.shape[1]
        back = Ia[:, idx_b, torch.arange(n)[None, :, None]]  # [a, b, i, t]: i ∈ N_a(N_b(i)_t)
        return back.any(-1).double().mean(-1)
    if metric == "cknna":
        (Ka, Ma, Sa, na), (Kb, Mb, Sb, nb) = a, b
        n = Ka.shape[1]
        tr = Sa @ Sb.T
        sum_a = Ka.flatten(1) @ Mb.flatten(1).T
        sum_b = Ma.flatten(1) @ Kb.flatten(1).T
        c = torch.bmm(Ka.permute(2, 0, 1), Mb.permute(2, 1, 0))   # j × a × b: Σ_i
        r = torch.bmm(Ma.permute(1, 0, 2), Kb.permute(1, 2, 0))   # j × a × b: Σ_l
        h = (tr + sum_a * sum_b / ((n - 1) * (n - 2)) - 2 * (c * r).sum(0) / (n - 2)) / (n * (n - 3))
        return h / (na[:, None] * nb[None, :])
    if metric == "svcca":
        A, B = a[0], b[0]
        if len({Q.shape[1] for Q in A} | {Q.shape[1] for Q in B}) > 1:  # rank-deficient: bases differ
            return torch.tensor([[mean_canonical_correlation(x, y) for y in B] for x in A], dtype=torch.float64)
        M = torch.einsum("anc,bnd->abcd", torch.stack(A), torch.stack(B))
        return torch.linalg.svdvals(M).clamp(max=1).mean(-1)
    raise ValueError(f"unknown alignment metric {metric!r}; available: {list(METRICS)}")


def pair_matrix(metric: str, A: list, B: list | None = None, block: int = 32) -> torch.Tensor:
    """len(A) × len(B) scores of ``metric`` for every pair of sides (``sides``), equal to
    ``PAIR[metric]`` on each pair: products of stacked blocks of ``block`` sides (each block
    stacked once; with ``B`` None, A against itself, computing one triangle of blocks)."""
    sym = B is None
    B = A if sym else B
    blocks_a = [(i, _block(metric, A[i:i + block])) for i in range(0, len(A), block)]
    blocks_b = blocks_a if sym else [(j, _block(metric, B[j:j + block])) for j in range(0, len(B), block)]
    out = torch.empty(len(A), len(B), dtype=torch.float64)
    for i0, a in blocks_a:
        for j0, b in blocks_b:
            if sym and j0 < i0:
                continue
            S = _scores(metric, a, b)
            out[i0:i0 + S.shape[0], j0:j0 + S.shape[1]] = S
            if sym and j0 > i0:
                out[j0:j0 + S.shape[1], i0:i0 + S.shape[0]] = S.T if metric in SYMMETRIC else _scores(metric, b, a)
    return out


SYMMETRIC = ("mutual_knn", "cka", "cka_rbf", "unbiased_cka", "svcca")  # score(a, b) = score(b, a)
