"""Alignment metrics on hand-checked cases, closed forms and stated invariances."""

import numpy as np
import pytest
import torch

from weightspace.core import align

ALL = list(align.METRICS)


def feats(n=120, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64)


def orth(d, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0]


@pytest.mark.parametrize("metric", ALL)
def test_identical_features_score_one(metric):
    X = align.prepare(feats())
    assert align.score(metric, X, X) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("metric", ["mutual_knn", "cycle_knn", "cka", "unbiased_cka", "cknna", "svcca"])
def test_permuted_samples_score_near_chance(metric):
    """Pairing each input with another input's representation destroys alignment."""
    X = align.prepare(feats(n=300, d=32))
    P = X[torch.randperm(300, generator=torch.Generator().manual_seed(5))]
    s = align.score(metric, X, P)
    chance = {"mutual_knn": 10 / 299, "cycle_knn": 1 - (1 - 10 / 299) ** 10}.get(metric, 0.0)
    assert abs(s - chance) < {"cka": 0.15, "svcca": 0.3}.get(metric, 0.06), (metric, s, chance)


def test_mutual_knn_hand_checked():
    """1-D points 0,1,2,10,11,12 on the unit circle (angles): the neighbourhoods of X and of a
    Y that swaps the two clusters' inner order are compared by hand."""
    angles = torch.tensor([0.0, 0.1, 0.2, 1.0, 1.1, 1.2], dtype=torch.float64)
    X = torch.stack([angles.cos(), angles.sin()], 1)
    # k = 1: neighbours in X: 0→1, 1→{0 or 2: tie broken to the larger cos}, ... use distinct gaps
    angles_y = torch.tensor([0.0, 0.3, 0.1, 1.0, 1.1, 1.2], dtype=torch.float64)
    Y = torch.stack([angles_y.cos(), angles_y.sin()], 1)
    # k=2: N_X = {0:{1,2},1:{0,2},2:{1,0},3:{4,5},4:{3,5},5:{4,3}}; in Y item 1 sits at 0.3:
    # N_Y = {0:{2,1},1:{2,0},2:{0,1},3:{4,5},4:{3,5},5:{4,3}} → identical sets → 1.0
    assert align.mutual_knn(X, Y, k=2) == pytest.approx(1.0)
    # k=1: N_X(0)=1, N_X(1)=0 or 2 (0.1 each: tie), N_X(2)=1; N_Y(0)=2, N_Y(1)=2, N_Y(2)=0
    a = align.knn(X, 1).flatten().tolist()
    b = align.knn(Y, 1).flatten().tolist()
    expected = np.mean([x == y for x, y in zip(a, b)])
    assert align.mutual_knn(X, Y, k=1) == pytest.approx(expected)
    assert b[:3] == [2, 2, 0]


def test_linear_cka_closed_form():
    """Linear CKA of centred X, Y = ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) (Kornblith et al., 2019)."""
    X, Y = feats(seed=0), feats(d=8, seed=3) + 0.5 * feats(seed=0)[:, :8]
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    ref = (torch.linalg.norm(Yc.T @ Xc) ** 2 / (torch.linalg.norm(Xc.T @ Xc) * torch.linalg.norm(Yc.T @ Yc)))
    assert align.cka(X, Y) == pytest.approx(float(ref), rel=1e-10)


def test_unbiased_hsic_matches_its_definition():
    """The unbiased HSIC against a direct sum over distinct index quadruples' formula
    (Song et al. 2012, eq. 5) written with explicit loops on a tiny case."""
    X, Y = feats(n=7, d=3, seed=1), feats(n=7, d=2, seed=2)
    K, L = X @ X.T, Y @ Y.T
    n = 7
    Kt, Lt = K.clone().fill_diagonal_(0), L.clone().fill_diagonal_(0)
    t1 = sum(Kt[i, j] * Lt[j, i] for i in range(n) for j in range(n))
    t2 = Kt.sum() * Lt.sum() / ((n - 1) * (n - 2))
    t3 = 2 / (n - 2) * sum(Kt[i, j] * Lt[j, l] for i in range(n) for j in range(n) for l in range(n))
    ref = (t1 + t2 - t3) / (n * (n - 3))
    assert float(align.hsic_unbiased(K, L)) == pytest.approx(float(ref), rel=1e-10)


@pytest.mark.parametrize("metric", ["cka", "unbiased_cka", "svcca"])
def test_rotation_and_scale_invariance_of_cka_and_svcca(metric):
    X, Y = feats(seed=0), feats(seed=0)[:, :8] + 0.3 * feats(d=8, seed=4)
    s = align.score(metric, X, Y)
    assert align.score(metric, X @ orth(16) * 3.0, Y) == pytest.approx(s, rel=1e-9)
    assert align.score(metric, X, Y @ orth(8, 2) * 0.1) == pytest.approx(s, rel=1e-9)


@pytest.mark.parametrize("metric", ["mutual_knn", "cycle_knn", "cknna"])
def test_knn_metrics_invariant_to_per_sample_scaling_and_rotation(metric):
    X, Y = feats(seed=0), feats(seed=0) + 0.8 * feats(seed=6)
    s = align.score(metric, align.prepare(X), align.prepare(Y))
    scale = torch.rand(X.shape[0], 1, generator=torch.Generator().manual_seed(7), dtype=torch.float64) * 5 + 0.1
    assert align.score(metric, align.prepare(X * scale), align.prepare(Y)) == pytest.approx(s, abs=1e-12)
    assert align.score(metric, align.prepare(X @ orth(16)), align.prepare(Y)) == pytest.approx(s, abs=1e-12)


@pytest.mark.parametrize("metric", ["mutual_knn", "cka", "cka_rbf", "unbiased_cka", "cknna", "svcca"])
def test_symmetric(metric):
    """Exactly symmetric, except CKNNA: its k-NN mask is not a symmetric matrix, so the
    unbiased HSIC's tr(K̃L̃) and 1ᵀK̃L̃1 terms differ slightly when the sides swap."""
    X, Y = align.prepare(feats(seed=0)), align.prepare(feats(seed=0) + feats(seed=8))
    tol = 1e-3 if metric == "cknna" else 1e-9
    assert align.score(metric, X, Y) == pytest.approx(align.score(metric, Y, X), rel=tol)


def test_more_shared_structure_scores_higher():
    """Monotone in the shared signal: Y = X + noise·t aligns less as t grows, for every metric."""
    X = feats(n=200, d=16, seed=0)
    noise = feats(n=200, d=16, seed=9)
    for metric in ALL:
        s = [align.score(metric, align.prepare(X), align.prepare(X + t * noise)) for t in (0.1, 1.0, 5.0)]
        assert s[0] > s[1] > s[2], (metric, s)


def test_clamp_limits_outliers():
    X = feats()
    X[0, 0] = 1e6
    P = align.prepare(X, clamp_quantile=0.99)
    assert torch.allclose(P.norm(dim=1), torch.ones(len(X), dtype=torch.float64))
    assert P[0, 0] < 0.9  # the outlier no longer dominates its row


def test_clamp_takes_the_quantile_over_the_whole_layer():
    """More than 2^24 values (torch.quantile's limit): the clamp is the quantile of all of them,
    including the large values beyond the first 2^24."""
    n = (1 << 24) + (1 << 22)
    X = torch.ones(n // 64, 64, dtype=torch.float64)
    X[(1 << 24) // 64:] = 100.0  # the last 2^22 values (20%) are large
    P = align.prepare(X, clamp_quantile=0.9)  # 0.9 quantile of |x| is 100: nothing clamped
    torch.testing.assert_close(P[-1], torch.full((64,), 1 / 8, dtype=torch.float64))
    assert float(np.quantile(X.abs().numpy(), 0.9)) == 100.0


def test_duplicate_probe_inputs_are_warned_about(caplog):
    from weightspace.representations import alignment_table

    f = torch.randn(20, 4, dtype=torch.float64)
    f[3] = f[7]
    feats = {v: {m: [f.clone()] for m in ("a", "b")} for v in ("original", "projected")}
    with caplog.at_level("WARNING", logger="weightspace"):
        alignment_table(feats, ["a", "b"], metrics=("cka",))
    assert "1 duplicate inputs" in caplog.text


def test_alignment_table_finds_the_best_layer_pair_and_the_projection_pairs():
    """Model b's layer 0 is model a's layer 1 (rotated): the best pair is (1, 0) with score 1
    for the rotation-invariant metrics; every pair and every model-vs-projection appears."""
    from weightspace.representations import alignment_table, matrix

    X0, X1, Z = feats(seed=0), feats(seed=1), feats(seed=2)
    f = {"a": [X0, X1], "b": [X1 @ orth(16), Z], "c": [Z, X0]}
    features = {"original": f, "projected": {m: [x + 0.01 * feats(seed=3) for x in v] for m, v in f.items()}}
    t = alignment_table(features, ["a", "b", "c"], metrics=["mutual_knn", "cka", "svcca"])
    ab = t[(t.variant == "original") & (t.model_a == "a") & (t.model_b == "b")].set_index("metric")
    assert (ab.score > 1 - 1e-9).all() and (ab.layer_a == 1).all() and (ab.layer_b == 0).all()
    assert len(t) == 3 * (3 + 3 + 3 + 3)  # metrics × (original, projected, null pairs + self)
    null = t[t.variant == "null"].groupby("metric").score.mean()
    assert null["mutual_knn"] < 0.2 and null["cka"] < 0.3  # a shuffled probe: near chance
    selfs = t[t.variant == "original~projected"]
    assert sorted(selfs.model_a) == sorted(selfs.model_b) == ["a", "a", "a", "b", "b", "b", "c", "c", "c"]
    assert (selfs.score > 0.9).all()
    M = matrix(t, "cka", "original", ["a", "b", "c"])
    assert np.allclose(M.values, M.values.T) and M.loc["a", "b"] == pytest.approx(1.0)
    pairs = [align.cka(align.prepare(x), align.prepare(y)) for x in f["b"] for y in f["c"]]
    assert M.loc["b", "c"] == pytest.approx(max(pairs), rel=1e-12)  # the maximum over layer pairs


@pytest.mark.parametrize("metric", align.METRICS)
def test_all_pairs_matrix_equals_the_pairwise_reference(metric, monkeypatch):
    """pair_matrix (one product of the packed kernels for the CKAs, float64 to 1e-10 and the
    default float32 to 1e-5; union-column indicator products for mutual k-NN; gathers for cycle
    k-NN; the O(n·k) sorted-neighbour form of CKNNA, both directions; batched singular values
    for SVCCA) equals PAIR on every ordered pair, in chunks smaller than one pair's work, for
    sub-packs and for features of different widths."""
    g = torch.Generator().manual_seed(0)
    feats = [align.prepare(torch.randn(40, 7 + i % 3, generator=g, dtype=torch.float64)) for i in range(7)]
    S = [align.sides(metric, f, 5, 4) for f in feats]
    ref = torch.tensor([[align.PAIR[metric](a, b) for b in S] for a in S], dtype=torch.float64)
    tol = 1e-10
    torch.testing.assert_close(align.pair_matrix(metric, S, dtype=torch.float64), ref, atol=tol, rtol=0)
    if metric in align.GRAM:
        torch.testing.assert_close(align.pair_matrix(metric, S), ref, atol=1e-5, rtol=0)
        tol = 1e-5
    monkeypatch.setattr(align, "CHUNK", 7)  # every chunked loop in steps of one
    torch.testing.assert_close(align.pair_matrix(metric, S, S), ref, atol=tol, rtol=0)
    torch.testing.assert_close(align.pair_matrix(metric, S[:2], S[2:]), ref[:2, 2:], atol=tol, rtol=0)
    packed = align.pack(metric, S)
    torch.testing.assert_close(align.scores(align.rows_of(packed, 1, 3), packed), ref[1:3], atol=tol, rtol=0)
    assert align.pair_matrix(metric, S[:0], S).shape == (0, 7)


def test_u_centred_inner_product_is_the_unbiased_hsic():
    g = torch.Generator().manual_seed(1)
    X, Y = torch.randn(30, 5, generator=g, dtype=torch.float64), torch.randn(30, 8, generator=g, dtype=torch.float64)
    K, L = X @ X.T, Y @ Y.T
    n = 30
    assert float((align.u_center(K) * align.u_center(L)).sum() / (n * (n - 3))) == pytest.approx(
        float(align.hsic_unbiased(K, L)), rel=1e-12)


def test_alignment_table_equals_scores_of_every_layer_pair():
    """The batched stage table against align.score of every layer pair, maximised by hand."""
    from weightspace.representations import alignment_table

    g = torch.Generator().manual_seed(2)
    keys = [f"m{i}" for i in range(4)]
    feats = {v: {m: [torch.randn(30, 6, generator=g, dtype=torch.float64) for _ in range(2)] for m in keys}
             for v in ("original", "projected")}
    t = alignment_table(feats, keys, metrics=("cka", "cknna"), topk=4, cca_dim=3)
    for r in t[t.variant.isin(["original", "projected", "original~projected"])].itertuples():
        va, vb = {"original": ("original", "original"), "projected": ("projected", "projected"),
                  "original~projected": ("original", "projected")}[r.variant]
        best = max(align.score(r.metric, align.prepare(feats[va][r.model_a][i]), align.prepare(feats[vb][r.model_b][j]),
                               4, 3) for i in range(2) for j in range(2))
        assert r.score == pytest.approx(best, abs=1e-6 if r.metric in align.GRAM else 1e-10)  # kernels in float32
    assert len(t) == (2 * 6 + 4 + 6) + (2 * 12 + 4 + 6)  # CKNNA: within pairs in both directions


@pytest.mark.parametrize("layers_spec", ["best", "last"])
def test_across_table_equals_scores_of_every_layer_pair_across_architectures(layers_spec):
    """Two collections of different widths and depths on the same probe items: every across,
    within and null score is align.score of the chosen layer pair (the best, or the last of
    each), to 1e-10; the null shuffles b's probe inputs."""
    from weightspace.representations import NULL_MODELS, across_summary, across_table

    g = torch.Generator().manual_seed(4)
    fa = {f"a{i}": [torch.randn(30, 6, generator=g, dtype=torch.float64) for _ in range(2)] for i in range(3)}
    fb = {f"b{i}": [torch.randn(30, 9, generator=g, dtype=torch.float64) for _ in range(3)] for i in range(4)}
    metrics = ("mutual_knn", "cycle_knn", "cka", "cknna", "svcca")
    t = across_table(fa, fb, metrics=metrics, topk=4, cca_dim=3, layers_spec=layers_spec)
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(0))
    side = {"across": (fa, fb, False), "within_a": (fa, fa, False), "within_b": (fb, fb, False), "null": (fa, fb, True)}
    for r in t.itertuples():
        x, y, shuffle = side[r.variant]
        La, Lb = len(x[r.model_a]), len(y[r.model_b])
        pairs = [(i, j) for i in range(La) for j in range(Lb)] if layers_spec == "best" else [(La - 1, Lb - 1)]
        want = max(align.score(r.metric, align.prepare(x[r.model_a][i]),
                               align.prepare(y[r.model_b][j][perm] if shuffle else y[r.model_b][j]), 4, 3)
                   for i, j in pairs)
        assert r.score == pytest.approx(want, abs=1e-6 if r.metric in align.GRAM else 1e-10), r  # kernels in float32
    counts = t[t.metric == "cka"].variant.value_counts().to_dict()
    assert counts == {"across": 12, "within_a": 3, "within_b": 6, "null": min(3, NULL_MODELS) * min(4, NULL_MODELS)}
    summary = across_summary(t).set_index("metric")
    assert summary.loc["cka", "across_pairs"] == 12
    assert summary.loc["cka", "across"] == pytest.approx(t[(t.metric == "cka") & (t.variant == "across")].score.mean())


def test_across_table_finds_the_shared_representation():
    """Collection b's models are rotations (and, in one layer, a widening) of a's: across equals
    within, far above the shuffled-probe null."""
    from weightspace.representations import across_summary, across_table

    base = [feats(seed=s) for s in range(3)]
    fa = {f"a{i}": [x + 0.01 * feats(seed=10 + i) for x in base[:2]] for i in range(3)}
    fb = {f"b{i}": [base[0] @ orth(16, seed=20 + i), torch.cat([base[1], base[1] @ orth(16, seed=30)], 1), base[2]]
          for i in range(3)}
    summary = across_summary(across_table(fa, fb, metrics=("mutual_knn", "cka"))).set_index("metric")
    for metric in ("mutual_knn", "cka"):
        assert summary.loc[metric, "across"] > 0.9 and summary.loc[metric, "null"] < 0.3


def test_different_probes_are_refused():
    from weightspace.representations import check_same_probe

    check_same_probe({"probe": "abc"}, {"probe": "abc"}, "x", "y")
    with pytest.raises(ValueError, match="x and y were probed with different inputs"):
        check_same_probe({"probe": "abc"}, {"probe": "abd"}, "x", "y")
    with pytest.raises(ValueError, match="different inputs"):
        check_same_probe({}, {"probe": None}, "x", "y")


# Brute-force references: Python sets and loops over the definitions (Huh et al.'s code),
# against the vectorised metrics.

def _neighbours(F: list[list[float]], k: int) -> list[set[int]]:
    """N(i): the k rows j ≠ i with the largest ⟨f_i, f_j⟩, by sorting."""
    n = len(F)
    dot = lambda i, j: sum(a * b for a, b in zip(F[i], F[j]))  # noqa: E731
    return [set(sorted((j for j in range(n) if j != i), key=lambda j: -dot(i, j))[:k]) for i in range(n)]


def _hsic_unbiased_loops(K, L) -> float:
    """Song et al.'s unbiased HSIC written out with loops (zero diagonals)."""
    n = len(K)
    Kt = [[0.0 if i == j else K[i][j] for j in range(n)] for i in range(n)]
    Lt = [[0.0 if i == j else L[i][j] for j in range(n)] for i in range(n)]
    trace = sum(Kt[i][j] * Lt[j][i] for i in range(n) for j in range(n))
    sum_k = sum(sum(r) for r in Kt)
    sum_l = sum(sum(r) for r in Lt)
    cross = sum(Kt[i][j] * Lt[j][m] for i in range(n) for j in range(n) for m in range(n))
    return (trace + sum_k * sum_l / ((n - 1) * (n - 2)) - 2 * cross / (n - 2)) / (n * (n - 3))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cycle_knn_equals_sets_and_loops(seed):
    X, Y = align.prepare(feats(n=24, d=5, seed=seed)), align.prepare(feats(n=24, d=5, seed=seed + 10))
    k = 3
    NX, NY = _neighbours(X.tolist(), k), _neighbours(Y.tolist(), k)
    expected = sum(i in set().union(*(NX[j] for j in NY[i])) for i in range(len(NX))) / len(NX)
    assert align.cycle_knn(X, Y, k) == pytest.approx(expected, abs=1e-12)
    expected_mutual = sum(len(NX[i] & NY[i]) for i in range(len(NX))) / (k * len(NX))
    assert align.mutual_knn(X, Y, k) == pytest.approx(expected_mutual, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_cknna_equals_sets_and_loops(seed):
    """CKNNA: unbiased HSIC of the kernels restricted to pairs that are k-NN in both spaces,
    normalised by each side's own restricted HSIC (Huh et al., without their 1e-6)."""
    X, Y = align.prepare(feats(n=14, d=4, seed=seed)), align.prepare(feats(n=14, d=4, seed=seed + 20))
    k, n = 4, 14
    F, G = X.tolist(), Y.tolist()
    K = [[sum(a * b for a, b in zip(F[i], F[j])) for j in range(n)] for i in range(n)]
    L = [[sum(a * b for a, b in zip(G[i], G[j])) for j in range(n)] for i in range(n)]
    NK, NL = _neighbours(F, k), _neighbours(G, k)

    def restricted(A, NA, B, NB):
        mask = [[1.0 if (j in NA[i] and j in NB[i]) else 0.0 for j in range(n)] for i in range(n)]
        return _hsic_unbiased_loops([[mask[i][j] * A[i][j] for j in range(n)] for i in range(n)],
                                    [[mask[i][j] * B[i][j] for j in range(n)] for i in range(n)])

    expected = restricted(K, NK, L, NL) / (restricted(K, NK, K, NK) * restricted(L, NL, L, NL)) ** 0.5
    assert align.cknna(X, Y, k) == pytest.approx(expected, rel=1e-9)
    both = [align.sides("cknna", X, topk=k), align.sides("cknna", Y, topk=k)]
    assert float(align.pair_matrix("cknna", both)[0, 1]) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("shape", [(40, 7), (12, 30)])
def test_principal_basis_from_the_gram_spans_the_svds_leading_directions(shape):
    """SVCCA's bases from the smaller Gram (d < n and d ≥ n): orthonormal, spanning what the
    SVD's leading left singular vectors of the centred features span (projectors to 1e-9)."""
    X = torch.randn(*shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    Q = align.principal_basis(X, 4)
    U = torch.linalg.svd(X - X.mean(0), full_matrices=False)[0][:, :4]
    torch.testing.assert_close(Q.T @ Q, torch.eye(4, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(Q @ Q.T, U @ U.T, atol=1e-9, rtol=0)


def test_packing_many_models_keeps_memory_flat():
    """Sides made one after another (an n×n kernel each, n·k numbers kept) leave resident memory
    flat once large frees go back to the system (runtime.return_large_frees, set by the align jobs):
    60 CKNNA sides at n = 600 add under 60 MB (glibc's default kept ~2.5 MB per side here)."""
    import subprocess
    import sys

    code = """
import torch
from weightspace.core import align
from weightspace.runtime import return_large_frees
return_large_frees()
def rss(): return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20
X = align.prepare(torch.randn(600, 64, dtype=torch.float64))
align.sides('cknna', X, 10, 10)
before = rss()
keep = [align.sides('cknna', X, 10, 10) for _ in range(60)]
print(rss() - before)
"""
    grown = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert grown < 60, grown
