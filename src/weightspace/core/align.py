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
subspaces (orthonormal bases' singular values; the bases from the smaller Gram), without their per-column rescaling; the RBF
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
    """An orthonormal basis (n×r, r ≤ ``dim``) of the top principal components' scores of X:
    the leading left singular vectors of the centred X, from the eigendecomposition of its
    smaller Gram (Xcᵀ Xc when d < n: U = Xc V Λ^(−1/2); else Xc Xcᵀ), 2-3× faster than the SVD
    at n = 1000, d = 768. Directions with σ ≤ 1e-7 σ₁ (the Gram's rounding floor) are dropped."""
    Xc = X - X.mean(0)
    n, d = Xc.shape
    w, V = torch.linalg.eigh(Xc.T @ Xc if d < n else Xc @ Xc.T)
    w, V = w.flip(0), V.flip(1)
    r = min(dim, int((w > w[0] * 1e-14).sum()))
    return Xc @ V[:, :r] / w[:r].sqrt() if d < n else V[:, :r]


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
    if metric == "cknna":  # n·k numbers: sorted neighbours, K at them, whether i is a neighbour of j too
        K = X @ X.T
        M = knn_mask(K, topk)
        idx = M.nonzero()[:, 1].view(len(K), -1)  # each row's k neighbours, in increasing order
        return idx, K.gather(1, idx), M.T.gather(1, idx).bool(), masked_hsic(K, M, K, M).sqrt() + 1e-12
    if metric == "svcca":
        return principal_basis(X, cca_dim)
    raise ValueError(f"unknown alignment metric {metric!r}; available: {list(METRICS)}")


PAIR = {"mutual_knn": knn_overlap, "cycle_knn": knn_cycle,
        "cka": lambda A, B: float((A * B).sum()), "cka_rbf": lambda A, B: float((A * B).sum()),
        "unbiased_cka": lambda A, B: float(hsic_unbiased(A, B)),
        "cknna": lambda a, b: float(masked_hsic(*_dense(a), *_dense(b)) / (a[3] * b[3])),
        "svcca": mean_canonical_correlation}


def _dense(side: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """A CKNNA side's masked kernel M ⊙ K and mask M as n×n matrices (the pairwise reference)."""
    idx, vals = side[0], side[1]
    n = len(idx)
    return (torch.zeros(n, n, dtype=vals.dtype).scatter_(1, idx, vals),
            torch.zeros(n, n, dtype=vals.dtype).scatter_(1, idx, 1.0))


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
# The scores of every pair of two lists of sides, at the arithmetic floor of each metric. A list
# is packed once (``pack``): its sides written into one preallocated array (the kernels as rows
# of an M × n² float32 matrix; neighbour lists as flat keys or sorted rows), so all pairs of the
# Gram metrics are one matrix product, and the k-NN metrics cost O(n·k) per pair. The pairwise
# ``PAIR`` functions are the reference the tests compare against (float64 packs to 1e-10, the
# float32 kernels to 1e-5).
def u_center(K: torch.Tensor) -> torch.Tensor:
    """The U-centred kernel of Székely & Rizzo (2014): with K̃ = K with zero diagonal, s its row
    sums and S = Σ s, Ũ_ij = K̃_ij − (s_i + s_j)/(n−2) + S/((n−1)(n−2)) off the diagonal, 0 on it;
    ⟨Ũ(K), Ũ(L)⟩ / (n(n−3)) is the unbiased HSIC of Song et al. (``hsic_unbiased``)."""
    n = K.shape[0]
    Kt = K.clone().fill_diagonal_(0)
    s = Kt.sum(1)
    U = Kt - (s[:, None] + s[None, :]) / (n - 2) + s.sum() / ((n - 1) * (n - 2))
    return U.fill_diagonal_(0)


GRAM = ("cka", "cka_rbf", "unbiased_cka")  # scores are inner products of one n² row per side
CHUNK = 1 << 26  # elements of the largest temporary of a gather or product (512 MB of float64)


def pack(metric: str, sides, dtype: torch.dtype = torch.float32) -> dict:
    """A list, lazy sequence or iterator of one metric's sides, packed for ``scores``:

    - cka, cka_rbf: each unit centred kernel as one row of a preallocated M × n² matrix of
      ``dtype``; unbiased_cka: the U-centred unit kernel / √(n(n−3)), likewise;
    - mutual_knn: the flat keys i·n + j of each model's n·k neighbour pairs (M × n·k);
    - cycle_knn: the neighbour lists and each model's neighbour indicator (M × n² booleans);
    - cknna: each row's neighbours sorted, the kernel at them, whether i is a neighbour of its
      neighbour j too, and the side's own norm (n·k numbers per model: ``sides``);
    - svcca: the principal bases.
    """
    every = sides if hasattr(sides, "__len__") else list(sides)  # a lazy sequence is read once, in order
    if not len(every):
        return {"metric": metric, "count": 0}
    if metric in GRAM:
        G = None
        for i, A in enumerate(every):  # each kernel written once into the preallocated matrix
            n = A.shape[0]
            if G is None:
                G = torch.empty(len(every), n * n, dtype=dtype)
            G[i] = u_center(A).flatten() / (n * (n - 3)) ** 0.5 if metric == "unbiased_cka" else A.flatten()
        return {"metric": metric, "count": len(G), "G": G}
    every = list(every)
    first = every[0]
    if metric == "mutual_knn":
        n, k = first.shape
        keys = torch.stack([(torch.arange(n)[:, None] * n + idx).flatten() for idx in every])
        return {"metric": metric, "count": len(every), "keys": keys, "nk": n * k}
    if metric == "cycle_knn":
        idx = torch.stack(list(every))  # M × n × k
        n = idx.shape[1]
        ind = torch.zeros(len(every), n, n, dtype=torch.bool).scatter_(2, idx, True).view(len(every), n * n)
        return {"metric": metric, "count": len(every), "idx": idx, "ind": ind}
    if metric == "cknna":
        return {"metric": metric, "count": len(every), "idx": torch.stack([s[0] for s in every]),
                "vals": torch.stack([s[1] for s in every]), "sym": torch.stack([s[2] for s in every]),
                "norm": torch.tensor([float(s[3]) for s in every], dtype=torch.float64)}
    if metric == "svcca":
        return {"metric": metric, "count": len(every), "Q": every}
    raise ValueError(f"unknown alignment metric {metric!r}; available: {list(METRICS)}")


def rows_of(p: dict, i0: int, i1: int) -> dict:
    """The sub-pack of sides i0..i1 (views, no copy)."""
    return {k: (v[i0:i1] if torch.is_tensor(v) or isinstance(v, list) else v) for k, v in p.items()} | {
        "count": max(0, min(i1, p["count"]) - i0)}


def _gram(A: torch.Tensor, B: torch.Tensor | None) -> torch.Tensor:
    """A Bᵀ (A Aᵀ with B None: one BLAS syrk, half the products), in float64."""
    if B is None:
        import numpy as np
        from scipy.linalg import blas

        a = np.asfortranarray(A.numpy().T)  # n² × M, column-major: syrk(trans=1) gives aᵀa = A Aᵀ
        syrk = blas.ssyrk if A.dtype == torch.float32 else blas.dsyrk
        S = torch.from_numpy(np.ascontiguousarray(syrk(1.0, a, trans=1, lower=0))).to(torch.float64)
        return S.triu() + S.triu(1).T
    return (A @ B.T).to(torch.float64)


def _mutual(a: dict, b: dict | None) -> torch.Tensor:
    """Σ_i |N_a(i) ∩ N_b(i)| / (n k) for every pair: ⟨I_a, I_b⟩ of 0/1 neighbour indicators, over
    only the columns (i, j) some side uses (the union of their keys: a few n·k where
    neighbourhoods agree, at most n²), as float32 products of column chunks."""
    keys = a["keys"] if b is None else torch.cat([a["keys"], b["keys"]])
    uniq, inv = torch.unique(keys, return_inverse=True)
    M, U = len(keys), len(uniq)
    step = max(1, CHUNK // (2 * M))
    S = torch.zeros(M if b is None else a["count"], M if b is None else b["count"], dtype=torch.float64)
    rows = torch.arange(M)[:, None].expand_as(inv)
    for u0 in range(0, U, step):
        sel = (inv >= u0) & (inv < u0 + step)
        D = torch.zeros(M, min(step, U - u0), dtype=torch.float32)
        D[rows[sel], inv[sel] - u0] = 1.0
        S += _gram(D, None) if b is None else (D[: a["count"]] @ D[a["count"]:].T).to(torch.float64)
    return S / a["nk"]


def _cycle(a: dict, b: dict) -> torch.Tensor:
    """mean_i [i ∈ N_a(j) for some j ∈ N_b(i)]: for each b, a's indicators gathered at the n·k
    flat positions j·n + i (one index_select per chunk of b's)."""
    Na, (Nb, n, k) = a["count"], b["idx"].shape
    pos = b["idx"] * n + torch.arange(n)[None, :, None]  # Nb × n × k
    out = torch.empty(Na, Nb, dtype=torch.float64)
    step = max(1, CHUNK // max(1, Na * n * k))
    for j0 in range(0, Nb, step):
        got = a["ind"].index_select(1, pos[j0:j0 + step].flatten()).view(Na, -1, n, k)
        out[:, j0:j0 + step] = got.any(-1).double().mean(-1)
    return out


def _cknna(a: dict, b: dict | None) -> torch.Tensor:
    """CKNNA from n·k numbers per side. For a pair, M = M_a ⊙ M_b; at a's neighbour (i, j) its b
    counterpart is found in b's sorted row i (searchsorted): m (mutual), K_b,ij, and whether
    (j, i) is mutual too (both sides' own flags). With the unbiased HSIC's three parts:
    tr = Σ m·sym·K_a K_b, 1ᵀ(M⊙K)1 = Σ m K, 1ᵀ(M⊙K_a)(M⊙K_b)1 = Σ_j c_j r_j with c the column
    sums of M⊙K_a and r the row sums of M⊙K_b; both directions (a, b) and (b, a) from one pass
    (the columns of one side meet the rows of the other)."""
    sym = b is None
    b = a if sym else b
    Na, (Nb, n, k) = a["count"], b["idx"].shape
    out = torch.empty(Na, Nb, dtype=torch.float64)
    step = max(1, CHUNK // (16 * n * k))
    for i in range(Na):
        ia, Ka, sa = a["idx"][i], a["vals"][i], a["sym"][i]
        j_start = i if sym else 0
        for j0 in range(j_start, Nb, step):
            ib, Kb, sb = b["idx"][j0:j0 + step], b["vals"][j0:j0 + step], b["sym"][j0:j0 + step]
            B = len(ib)
            pos = torch.searchsorted(ib, ia.expand(B, n, k)).clamp_(max=k - 1)
            m = ib.gather(2, pos) == ia
            Kab, Kbb = torch.where(m, Ka, 0.0), torch.where(m, Kb.gather(2, pos), 0.0)
            both = m & sa & sb.gather(2, pos)
            tr = (torch.where(both, Ka * Kbb, 0.0)).flatten(1).sum(1)
            s_a, s_b = Kab.flatten(1).sum(1), Kbb.flatten(1).sum(1)
            c_a = torch.zeros(B, n, dtype=torch.float64).scatter_add_(1, ia.expand(B, n, k).reshape(B, -1), Kab.reshape(B, -1))
            c_b = torch.zeros(B, n, dtype=torch.float64).scatter_add_(1, ia.expand(B, n, k).reshape(B, -1), Kbb.reshape(B, -1))
            r_a, r_b = Kab.sum(2), Kbb.sum(2)
            base = tr + s_a * s_b / ((n - 1) * (n - 2))
            h_ab = (base - 2 * (c_a * r_b).sum(1) / (n - 2)) / (n * (n - 3))
            h_ba = (base - 2 * (c_b * r_a).sum(1) / (n - 2)) / (n * (n - 3))
            out[i, j0:j0 + B] = h_ab / (a["norm"][i] * b["norm"][j0:j0 + B])
            if sym:
                out[j0:j0 + B, i] = h_ba / (a["norm"][i] * b["norm"][j0:j0 + B])
    return out


def _svcca(a: dict, b: dict | None) -> torch.Tensor:
    A, B = a["Q"], (a if b is None else b)["Q"]
    if len({Q.shape[1] for Q in A} | {Q.shape[1] for Q in B}) > 1:  # rank-deficient: bases differ
        return torch.tensor([[mean_canonical_correlation(x, y) for y in B] for x in A], dtype=torch.float64)
    QA, QB = torch.stack(A), torch.stack(B)
    out = torch.empty(len(A), len(B), dtype=torch.float64)
    step = max(1, CHUNK // max(1, len(B) * QA.shape[2] ** 2))
    for i0 in range(0, len(A), step):
        M = torch.einsum("anc,bnd->abcd", QA[i0:i0 + step], QB)
        out[i0:i0 + step] = torch.linalg.svdvals(M).clamp(max=1).mean(-1)
    return out


def scores(a: dict, b: dict | None = None) -> torch.Tensor:
    """len(a) × len(b) scores of every pair of two packs (``pack``; with ``b`` None, a against
    itself: one triangle of products where the metric is symmetric)."""
    metric = a["metric"]
    if a["count"] == 0 or (b is not None and b["count"] == 0):
        return torch.empty(a["count"], a["count"] if b is None else b["count"], dtype=torch.float64)
    if metric in GRAM:
        return _gram(a["G"], None if b is None else b["G"])
    if metric == "mutual_knn":
        return _mutual(a, b)
    if metric == "cycle_knn":
        return _cycle(a, a if b is None else b)
    if metric == "cknna":
        return _cknna(a, b)
    if metric == "svcca":
        return _svcca(a, b)
    raise ValueError(f"unknown alignment metric {metric!r}; available: {list(METRICS)}")


def pair_matrix(metric: str, A: list, B: list | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """len(A) × len(B) scores of ``metric`` for every pair of sides (``sides``), equal to
    ``PAIR[metric]`` on each pair (the kernels' products in ``dtype``): ``scores`` of packs."""
    return scores(pack(metric, A, dtype), None if B is None else pack(metric, B, dtype))


SYMMETRIC = ("mutual_knn", "cka", "cka_rbf", "unbiased_cka", "svcca")  # score(a, b) = score(b, a)
