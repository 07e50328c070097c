"""The decomposition against references (numpy SVD of unfoldings, tensorly.tucker)."""

import numpy as np
import pytest
import tensorly as tl
import torch
from tensorly.decomposition import tucker

from weightspace.core import hosvd, stats
from weightspace.core.lowrank import LowRank
from weightspace.project import coefficients, reconstruct
from weightspace.stream import model_gram_dense

F64 = torch.float64


def stack(N=7, m=6, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, m, n, generator=g, dtype=torch.float64)


def sums_of(Ws):
    s = hosvd.ModeSums(Ws.shape[1], Ws.shape[2])
    for W in Ws:
        s.add(W)
    return s


def full_decomposition(Ws, max_k=100, center=True):
    K = torch.einsum("imn,jmn->ij", Ws, Ws)
    return hosvd.decompose(sums_of(Ws), K, max_k, center)


def assert_same_up_to_sign(A, B, atol=1e-10):
    assert A.shape == B.shape
    signs = torch.sign((A * B).sum(0))
    np.testing.assert_allclose(A * signs, B, atol=atol)


def test_grams_equal_unfolding_products():
    Ws = stack()
    X = Ws - Ws.mean(0)
    G_row, G_col = sums_of(Ws).grams(center=True)
    np.testing.assert_allclose(G_row, torch.einsum("imn,ikn->mk", X, X), atol=1e-12)
    np.testing.assert_allclose(G_col, torch.einsum("imn,imk->nk", X, X), atol=1e-12)


def test_factors_and_spectra_match_svd_of_unfoldings():
    Ws = stack(N=9, m=6, n=4)
    X = (Ws - Ws.mean(0)).numpy()
    sub = full_decomposition(Ws)
    for mode, U, lam in [(1, sub.U_row, sub.eig_row), (2, sub.U_col, sub.eig_col)]:
        unf = np.moveaxis(X, mode, 0).reshape(X.shape[mode], -1)
        u, s, _ = np.linalg.svd(unf, full_matrices=False)
        np.testing.assert_allclose(lam[: len(s)], s ** 2, rtol=1e-10, atol=1e-10)
        assert_same_up_to_sign(U[:, : len(s)], torch.from_numpy(u[:, : U.shape[1]]))
    s_model = np.linalg.svd(X.reshape(X.shape[0], -1), compute_uv=False)
    np.testing.assert_allclose(sub.eig_model, s_model ** 2, atol=1e-10)
    # every mode carries the same total energy Σ‖X_i‖²
    total = (X ** 2).sum()
    for lam in (sub.eig_row, sub.eig_col, sub.eig_model):
        assert float(lam.sum()) == pytest.approx(total, rel=1e-12)


def test_factors_match_tensorly_tucker():
    Ws = stack(N=8, m=6, n=5, seed=3)
    X = Ws - Ws.mean(0)
    tl.set_backend("numpy")
    core, (F0, F1, F2) = tucker(X.numpy(), rank=[8, 4, 3], init="svd", n_iter_max=0)
    sub = full_decomposition(Ws, max_k=4)
    assert_same_up_to_sign(sub.U_row[:, :4], torch.from_numpy(F1))
    assert_same_up_to_sign(sub.U_col[:, :3], torch.from_numpy(F2[:, :3]))


def test_full_rank_reconstructs_exactly():
    Ws = stack(N=5, m=4, n=3)
    sub = full_decomposition(Ws)
    for W in Ws:
        C = coefficients(W, sub.mean, sub.U_row, sub.U_col)
        np.testing.assert_allclose(reconstruct(C, sub.mean, sub.U_row, sub.U_col), W, atol=1e-12)


def test_nested_coefficients():
    Ws = stack(N=6, m=5, n=5)
    sub = full_decomposition(Ws)
    C = coefficients(Ws[0], sub.mean, sub.U_row, sub.U_col)
    C2 = coefficients(Ws[0], sub.mean, sub.U_row[:, :2], sub.U_col[:, :2])
    np.testing.assert_allclose(C[:2, :2], C2, atol=1e-13)


def test_heldout_projection_uses_basis_statistics_only():
    Ws = stack(N=10, m=5, n=4, seed=1)
    basis, held = Ws[:8], Ws[8:]
    sub_basis = full_decomposition(basis, max_k=2)
    # changing the held-out models changes nothing in the basis subspace
    sub_again = full_decomposition(torch.cat([basis]), max_k=2)
    np.testing.assert_allclose(sub_basis.mean, basis.mean(0), atol=1e-14)
    np.testing.assert_allclose(sub_basis.U_row, sub_again.U_row)
    C = coefficients(held[0], sub_basis.mean, sub_basis.U_row, sub_basis.U_col)
    expected = sub_basis.U_row.T @ (held[0] - basis.mean(0)) @ sub_basis.U_col
    np.testing.assert_allclose(C, expected, atol=1e-13)
    # and it differs from projecting with statistics that include the held-out models
    sub_all = full_decomposition(Ws, max_k=2)
    assert not torch.allclose(sub_all.mean, sub_basis.mean)


def test_planted_subspace_is_recovered():
    g = torch.Generator().manual_seed(5)
    m, n, r, N = 40, 30, 3, 60
    P, _ = torch.linalg.qr(torch.randn(m, r, generator=g, dtype=F64))
    Q, _ = torch.linalg.qr(torch.randn(n, r, generator=g, dtype=F64))
    mu = torch.randn(m, n, generator=g, dtype=F64)
    Ws = torch.stack([mu + P @ torch.randn(r, r, generator=g, dtype=F64) @ Q.T * 3
                      + 0.01 * torch.randn(m, n, generator=g, dtype=F64) for _ in range(N)])
    sub = full_decomposition(Ws, max_k=r)
    # principal angles between planted and found subspaces ≈ 0
    for planted, found in [(P, sub.U_row), (Q, sub.U_col)]:
        cosines = torch.linalg.svdvals(planted.T @ found)
        assert float(cosines.min()) > 0.9999
    assert float(stats.explained_variance(sub.eig_row)[r - 1]) > 0.995  # noise is 0.15% of energy


def test_lowrank_grams_equal_dense():
    g = torch.Generator().manual_seed(2)
    mats = [LowRank(torch.randn(7, 2, generator=g, dtype=F64), torch.randn(2, 5, generator=g, dtype=F64), s)
            for s in (0.5, 2.0, 1.5, 4.0)]
    dense = torch.stack([L.dense() for L in mats])
    s_low, s_dense = hosvd.ModeSums(7, 5), hosvd.ModeSums(7, 5)
    for L, D in zip(mats, dense):
        s_low.add(L)
        s_dense.add(D)
    for a, b in zip(s_low.grams(), s_dense.grams()):
        np.testing.assert_allclose(a, b, atol=1e-11)
    np.testing.assert_allclose(hosvd.model_gram_lowrank(mats),
                               torch.einsum("imn,jmn->ij", dense, dense), atol=1e-11)


def test_model_gram_in_row_blocks_equals_full():
    Ws = stack(N=6, m=11, n=4)
    K = model_gram_dense(lambda i, rows, out=None: Ws[i][rows], 6, 11, 4, block_rows=3)
    np.testing.assert_allclose(K, torch.einsum("imn,jmn->ij", Ws, Ws), atol=1e-12)


def test_model_gram_blocks_of_mixed_source_dtypes():
    """Models stored in different dtypes (bf16, fp16, float32, float64) share one read buffer
    without losing a bit: the Gram equals the float64 one of the same values."""
    Ws = stack(N=4, m=9, n=5)
    src = [Ws[0].bfloat16(), Ws[1].half(), Ws[2].float(), Ws[3]]
    exact = torch.stack([w.double() for w in src])
    K = model_gram_dense(lambda i, rows, out=None: src[i][rows], 4, 9, 5, block_rows=4)
    np.testing.assert_allclose(K, torch.einsum("imn,jmn->ij", exact, exact), rtol=1e-13)


def test_streaming_sums_merge_like_one_pass():
    Ws = stack(N=8)
    a, b, both = sums_of(Ws[:5]), sums_of(Ws[5:]), sums_of(Ws)
    np.testing.assert_allclose(a.S + b.S, both.S)
    np.testing.assert_allclose(a.R + b.R, both.R, atol=1e-12)
    np.testing.assert_allclose(a.C + b.C, both.C, atol=1e-12)


def test_gaussian_null_is_flat():
    null = hosvd.gaussian_null(N=50, m=8, n=30, variance=2.0, seed=0)
    lam = null["gaussian_row"]
    ev = stats.explained_variance(lam)
    assert float(ev[0]) < 0.25  # top direction of 8 carries little more than 1/8
    assert float(lam.sum()) == pytest.approx(49 * 8 * 30 * 2.0, rel=0.05)


def test_eigh_desc_sorted_and_sign_fixed():
    Ws = stack()
    lam, U = hosvd.eigh_desc(sums_of(Ws).grams()[0])
    assert torch.all(lam[:-1] >= lam[1:])
    assert torch.all(U[U.abs().argmax(0), torch.arange(U.shape[1])] > 0)


def test_nystrom_meets_tropp_bound_in_expectation():
    g = torch.Generator().manual_seed(0)
    d, l, r = 200, 24, 6
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))
    lam = torch.arange(1, d + 1, dtype=F64) ** -2.0
    G = (Q * lam) @ Q.T
    errors = []
    for seed in range(10):
        Om = hosvd.random_orthonormal(d, l, torch.Generator().manual_seed(seed))
        lam_hat, U = hosvd.nystrom(G @ Om, Om)
        errors.append(float(torch.linalg.svdvals(G - (U * lam_hat) @ U.T).sum()))
    bound = (1 + r / (l - r - 1)) * float(lam[r:].sum())
    assert sum(errors) / len(errors) <= bound
    # Nyström underestimates; for this slowly decaying spectrum the top three are within 5%
    np.testing.assert_allclose(lam_hat[:3], lam[:3], rtol=0.05)
    assert torch.all(lam_hat[:3] <= lam[:3] * (1 + 1e-9))


def test_sketched_modes_match_exact_on_low_rank_data():
    g = torch.Generator().manual_seed(4)
    m, n, r, N = 12, 90, 3, 40
    P, _ = torch.linalg.qr(torch.randn(m, r, generator=g, dtype=F64))
    Q, _ = torch.linalg.qr(torch.randn(n, r, generator=g, dtype=F64))
    Ws = torch.stack([torch.randn(m, n, generator=g, dtype=F64) * 0.05
                      + 5 * P @ torch.randn(r, r, generator=g, dtype=F64) @ Q.T for _ in range(N)])
    exact, sketched = hosvd.ModeSums(m, n), hosvd.ModeSums(m, n, sketch_col=21, sketch_seed=1)
    for W in Ws:
        exact.add(W)
        sketched.add(W)
    assert sketched.C is None and sketched.Y_col.shape == (n, 21)
    K = torch.einsum("imn,jmn->ij", Ws, Ws)
    a, b = hosvd.decompose(exact, K, 3), hosvd.decompose(sketched, K, 3)
    np.testing.assert_allclose(b.eig_col[:3], a.eig_col[:3], rtol=1e-2)
    assert float(torch.linalg.svdvals(a.U_col.T @ b.U_col).min()) > 0.999
    assert b.total == pytest.approx(float(a.eig_col.sum()), rel=1e-12)  # exact total energy
    ev_a = stats.explained_variance(a.eig_col)[2]
    ev_b = stats.explained_variance(b.eig_col, b.total)[2]
    assert float(ev_b) == pytest.approx(float(ev_a), rel=1e-2)


def test_float32_products_stay_close_to_float64():
    g = torch.Generator().manual_seed(7)
    m, n, N = 30, 200, 25
    base = torch.randn(m, n, generator=g, dtype=F64)
    Ws = [base + 0.3 * torch.randn(m, 3, generator=g, dtype=F64) @ torch.randn(3, n, generator=g, dtype=F64)
          + 0.01 * torch.randn(m, n, generator=g, dtype=F64) for _ in range(N)]
    a, b = hosvd.ModeSums(m, n), hosvd.ModeSums(m, n, product_dtype=torch.float32)
    for W in Ws:
        a.add(W.float())
        b.add(W.float())
    for mode in ("row", "col"):
        Ga, Gb = a.gram(mode, False), b.gram(mode, False)
        rel = float(torch.linalg.norm(Ga - Gb) / torch.linalg.norm(Ga))
        assert rel < 2**-24 * n ** 0.5 * 10, rel  # the documented per-entry bound, with margin
    la, Ua = hosvd.eigh_desc(a.gram("row"))
    lb, Ub = hosvd.eigh_desc(b.gram("row"))
    np.testing.assert_allclose(lb[:3], la[:3], rtol=1e-4)
    assert float(torch.linalg.svdvals(Ua[:, :3].T @ Ub[:, :3]).min()) > 1 - 1e-8


@pytest.mark.parametrize("sketch", [0, 21])
def test_float32_products_of_fine_tunes_keep_their_digits(sketch):
    """Fine-tunes of one checkpoint differ from their mean by ~10⁻³ of their size: float32
    products of the raw matrices would lose ~3 digits to cancellation in R − Nμμᵀ (0.7% error
    here). The sums of W − c (c the first model) keep the centred Grams, their sketches, the raw
    (uncentred) ones and the mean at float32 accuracy against float64."""
    g = torch.Generator().manual_seed(0)
    m, n, N = 40, 160, 20
    base = 0.02 * torch.randn(m, n, generator=g, dtype=F64)
    Ws = [(base + 2e-5 * (torch.randn(m, 3, generator=g, dtype=F64) @ torch.randn(3, n, generator=g, dtype=F64)
                          + 0.1 * torch.randn(m, n, generator=g, dtype=F64))).float() for _ in range(N)]
    kw = dict(sketch_row=sketch, sketch_col=sketch)
    a, b = hosvd.ModeSums(m, n, **kw), hosvd.ModeSums(m, n, product_dtype=torch.float32, **kw)
    for W in Ws:
        a.add(W)
        b.add(W)
    assert b.shift is not None and a.shift is None
    bound = 2**-24 * n ** 0.5 * 20
    np.testing.assert_allclose(b.mean, a.mean, rtol=1e-12, atol=1e-15)
    for mode in ("row", "col"):
        for center in (True, False):
            if sketch:
                (la, Ua), (lb, Ub) = a.mode_spectrum(mode, center), b.mode_spectrum(mode, center)
                rel = float((lb[:3] - la[:3]).abs().max() / la[0])
                assert float(torch.linalg.svdvals(Ua[:, :3].T @ Ub[:, :3]).min()) > 1 - 1e-6
            else:
                Ga, Gb = a.gram(mode, center), b.gram(mode, center)
                rel = float(torch.linalg.norm(Ga - Gb) / torch.linalg.norm(Ga))
            assert rel < bound, (mode, center, rel)


def test_two_pass_nystrom_meets_power_iteration_bound():
    """Nyström with Q = orth(GΩ) is the range finder with one power iteration on G^{1/2}:
    E‖(I − P)G^{1/2}‖ = E√‖G − Ĝ‖ ≤ C^{1/3} √λ_{k+1} (Halko, Martinsson, Tropp 2011, Cor. 10.10),
    and it is far more accurate than the one-pass sketch with the same width."""
    g = torch.Generator().manual_seed(1)
    d, k, p = 300, 8, 9
    l = k + p
    Qd, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))
    lam = torch.arange(1, d + 1, dtype=F64) ** -1.0  # slowly decaying: a hard case
    G = (Qd * lam) @ Qd.T
    one, two = [], []
    for seed in range(10):
        Om = hosvd.random_orthonormal(d, l, torch.Generator().manual_seed(seed))
        lam1, U1 = hosvd.nystrom(G @ Om, Om)
        Q = torch.linalg.qr(G @ Om)[0]
        lam2, U2 = hosvd.nystrom(G @ Q, Q)
        one.append(float(torch.linalg.matrix_norm(G - (U1 * lam1) @ U1.T, 2)))
        two.append(float(torch.linalg.matrix_norm(G - (U2 * lam2) @ U2.T, 2)))
    C = 1 + (k / (p - 1)) ** 0.5 + np.e * (k + p) ** 0.5 / p * (d - k) ** 0.5
    assert np.mean(np.sqrt(two)) <= C ** (1 / 3) * float(lam[k]) ** 0.5
    assert np.mean(two) < 0.5 * np.mean(one)


def test_column_refinement_accumulates_centred_gram_times_q():
    """The second pass over row blocks gives Z = G_c Q exactly (G_c the centred column Gram),
    whatever the block size, and its spectrum then replaces the one-pass one."""
    Ws = stack(N=7, m=10, n=30).float().double()  # blocks come in their source dtype (float32)
    sums = hosvd.ModeSums(10, 30, sketch_col=9, sketch_seed=2)
    for W in Ws:
        sums.add(W)
    ref = sums.refinement()
    K = model_gram_dense(lambda i, rows, out=None: Ws[i][rows].float(), 7, 10, 30, block_rows=3,
                               on_block=ref.add_rows, center=ref.mean)
    ref.finish()
    np.testing.assert_allclose(K, torch.einsum("imn,jmn->ij", Ws, Ws), rtol=1e-12)  # the raw Gram, recovered
    X = Ws - Ws.mean(0)
    G = torch.einsum("imn,imk->nk", X, X)
    np.testing.assert_allclose(ref.Z, G @ ref.Q, atol=1e-10)
    np.testing.assert_allclose(ref.Q.T @ ref.Q, torch.eye(9, dtype=F64), atol=1e-12)
    lam, U = sums.mode_spectrum("col")
    lam_ref, _ = hosvd.nystrom(G @ ref.Q, ref.Q)
    np.testing.assert_allclose(lam, lam_ref, atol=1e-10)


@pytest.mark.parametrize("d,blocks,dtype", [(13, 4, F64), (7, 3, torch.float32), (1, 4, F64), (10, 1, F64)])
def test_add_gram_is_a_symmetric_rank_k_update(d, blocks, dtype):
    g = torch.Generator().manual_seed(d)
    G0 = torch.randn(d, d, generator=g, dtype=F64)
    G0 = G0 + G0.T
    A = torch.randn(d, 9, generator=g, dtype=F64).to(dtype)
    G = G0.clone()
    hosvd.add_gram(G, A, blocks)
    ref = G0 + A.double() @ A.double().T
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(G, ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(G, G.T, rtol=tol, atol=tol)  # symmetric up to the diagonal blocks' round-off
