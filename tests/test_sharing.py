"""The sharing test (weightspace.core.sharing): null draws against explicit Haar rotations, the
stated false-positive rate on stacks with nothing shared, power on shared stacks, BH."""
import numpy as np
import pytest
import torch

from weightspace.core import stats
from weightspace.core import sharing

F64 = torch.float64


def haar(n, g):
    """Reference Haar orthogonal matrix: QR of a Gaussian with the signs of R's diagonal fixed."""
    q, r = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
    return q * torch.sign(torch.diagonal(r))


def independent_stack(N, m, n, g, spectrum=None):
    """N models with one anisotropic spectrum and independent Haar singular vectors: H0 exactly."""
    s = spectrum if spectrum is not None else 2.0 ** -torch.arange(min(m, n), dtype=F64)
    return torch.stack([haar(m, g)[:, : len(s)] @ torch.diag(s) @ haar(n, g)[: len(s)] for _ in range(N)])


def shared_stack(N, m, n, g, noise=0.1):
    """Fine-tunes of one matrix: W_0 + small independent noise."""
    W0 = torch.randn(m, n, generator=g, dtype=F64)
    return W0 + noise * torch.randn(N, m, n, generator=g, dtype=F64)


def statistic(Ws, K):
    """T of a stack from its explicit uncentred Grams (the reference)."""
    total = float((Ws ** 2).sum())
    rows = torch.linalg.eigvalsh(torch.einsum("imn,ikn->mk", Ws, Ws)).flip(0)
    cols = torch.linalg.eigvalsh(torch.einsum("imn,imk->nk", Ws, Ws)).flip(0)
    return float((sharing.evr_area(rows, K, total) + sharing.evr_area(cols, K, total)) / 2)


def p_value(Ws, draws, K, g):
    s = [sharing.singular_values(W) for W in Ws]
    total = float((Ws ** 2).sum())
    null = [(sharing.evr_area(sharing.rotation_null_draws(s, d, draws, g), K, total)) for d in Ws.shape[1:]]
    return stats.empirical_p(statistic(Ws, K), ((null[0] + null[1]) / 2).numpy())


def test_lowrank_singular_values_match_the_dense_product():
    g = torch.Generator().manual_seed(0)
    B, A = torch.randn(9, 3, generator=g, dtype=F64), torch.randn(3, 7, generator=g, dtype=F64)
    np.testing.assert_allclose(sharing.lowrank_singular_values(B, A, 0.5),
                               torch.linalg.svdvals(0.5 * B @ A)[:3], rtol=1e-12, atol=1e-12)


def test_one_model_draw_keeps_its_spectrum_and_draws_match_explicit_rotations():
    g = torch.Generator().manual_seed(1)
    W = torch.randn(6, 4, generator=g, dtype=F64)
    s = sharing.singular_values(W)
    lam = sharing.rotation_null_draws([s], 6, 3, g)
    np.testing.assert_allclose(lam, (s ** 2).expand(3, 4), rtol=1e-10)
    # many models: the frame draws and explicit Q_i W_i R_i have the same law (mean EVR at k=2)
    Ws = independent_stack(5, 6, 4, g, spectrum=torch.tensor([3.0, 1.0, 0.5, 0.1], dtype=F64))
    svals = [sharing.singular_values(W) for W in Ws]
    total = float((Ws ** 2).sum())
    frames = stats.explained_variance(sharing.rotation_null_draws(svals, 6, 2000, g).T, total)[1].numpy()
    stage = sharing.null_chunk(svals, sharing.NullMode(6, [sharing.philox_key(i) for i in range(5)]), range(2000))[0]
    stage = stats.explained_variance(stage.T, total)[1].numpy()  # the stage's draws: a frame per model and draw
    explicit = []
    for _ in range(2000):
        R = sum(Q @ W @ W.T @ Q.T for Q, W in ((haar(6, g), W) for W in Ws))
        explicit.append(float(stats.explained_variance(torch.linalg.eigvalsh(R).flip(0), total)[1]))
    for drawn in (frames, stage):
        se = np.hypot(drawn.std(), np.std(explicit)) / np.sqrt(2000)
        assert abs(drawn.mean() - np.mean(explicit)) < 4 * se


def test_false_positive_rate_is_at_most_alpha_on_independent_stacks():
    """300 stacks with nothing shared, R = 19 draws: P(p ≤ 0.05) is 0.05 exactly (exchangeable)."""
    g = torch.Generator().manual_seed(2)
    p = np.array([p_value(independent_stack(6, 8, 5, g), 19, 3, g) for _ in range(300)])
    rate = np.mean(p <= 0.05)
    assert 0.01 <= rate <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 300)
    # and p is roughly uniform (not piled at 1, which would mean a conservative, powerless test)
    assert 0.35 < np.mean(p <= 0.5) < 0.65


def test_shared_stacks_are_called_shared_and_bh_keeps_them():
    g = torch.Generator().manual_seed(3)
    ps = [p_value(shared_stack(6, 8, 5, g), 99, 3, g) for _ in range(4)]
    assert ps == [0.01] * 4  # every draw below the data: the floor 1/(1+R)
    ps += [p_value(independent_stack(6, 8, 5, g), 99, 3, g) for _ in range(4)]
    q = stats.benjamini_hochberg(np.array(ps))
    assert (q[:4] <= 0.05).all()
    assert stats.min_detectable_share(99, 0.05) == pytest.approx(0.2)


def test_benjamini_hochberg_against_a_hand_computed_example():
    p = np.array([0.01, 0.04, 0.03, 0.5])
    # sorted 0.01, 0.03, 0.04, 0.5 → 0.04, 0.06, 0.0533, 0.5 → step-up minimum from the top
    np.testing.assert_allclose(stats.benjamini_hochberg(p), [0.04, 0.0533333333, 0.0533333333, 0.5])


def test_evr_area_pads_short_spectra_with_full_explained_variance():
    eigs = torch.tensor([3.0, 1.0], dtype=F64)
    assert float(sharing.evr_area(eigs, 4)) == pytest.approx((0.75 + 1 + 1 + 1) / 4)


def test_shared_calls_is_p_against_draws_plus_margin_then_bh():
    rng = np.random.default_rng(3)
    T = [0.9, 0.52, 0.5, 0.3]
    draws = [rng.normal(0.5, 0.001, 99) for _ in T]
    p, q, calls = stats.shared_calls(T, draws, margin=0.05, fdr=0.05)
    expected = [stats.empirical_p(t, d + 0.05) for t, d in zip(T, draws)]
    np.testing.assert_allclose(p, expected)
    np.testing.assert_allclose(q, stats.benjamini_hochberg(np.array(expected)))
    assert calls.tolist() == [True, False, False, False]  # 0.52 beats the draws but not the margin
    assert stats.shared_calls([0.52], [draws[1]], margin=0.0, fdr=0.05)[2].tolist() == [True]


@pytest.mark.parametrize("shape", [(6, 40, 7), (4, 64, 64), (3, 10, 1)])
def test_haar_frames_are_the_q_of_qr_with_positive_r(shape):
    """The null's frames equal the reference QR's Q with R's diagonal made positive (the unique
    Haar-distributed factor), to 1e-12, square frames included."""
    X = torch.randn(*shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    Q, R = torch.linalg.qr(X)
    Q = Q * torch.sign(torch.diagonal(R, dim1=-2, dim2=-1))[:, None, :]
    F = sharing.haar_frames(X)
    torch.testing.assert_close(F, Q, atol=1e-12, rtol=0)
    torch.testing.assert_close(F.transpose(1, 2) @ F, torch.eye(shape[2], dtype=torch.float64).expand(shape[0], -1, -1),
                               atol=1e-13, rtol=0)


def test_haar_frames_of_a_singular_gaussian_are_orthonormal():
    """A square frame whose XᵀX Cholesky cannot factor (two equal columns: what a 48×48 float32
    Gaussian's condition number can approach) still comes back orthonormal and equal to the
    sign-fixed Householder Q (the synthetic 300-matrix collection crashed the CholeskyQR2 frames)."""
    X = torch.randn(2, 48, 48, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    X[1, :, 7] = X[1, :, 3]
    with pytest.raises(RuntimeError):
        torch.linalg.cholesky(X.transpose(1, 2) @ X)
    F = sharing.haar_frames(X)
    torch.testing.assert_close(F.transpose(1, 2) @ F, torch.eye(48, dtype=torch.float64).expand(2, -1, -1),
                               atol=1e-12, rtol=0)
    Q, R = torch.linalg.qr(X[:1])
    torch.testing.assert_close(F[:1], Q * torch.sign(torch.diagonal(R, dim1=-2, dim2=-1))[:, None, :],
                               atol=1e-12, rtol=0)


def test_power_ceiling_is_own_area_minus_the_null_of_rotated_identical_copies():
    """N identical copies of W: the data's EVR area is W's own; the rotation null is that of
    Q_i W R_i. ceiling_area equals the difference computed with explicit rotations (Monte
    Carlo, 400 draws), and a 1×128 head at N = 4 can show at most ~0.04 (row mode 0, col ~0.09)."""
    g = torch.Generator().manual_seed(3)
    W = torch.randn(6, 12, generator=g, dtype=F64) * (2.0 ** -torch.arange(12, dtype=F64))
    N, K = 3, 4
    s2 = torch.linalg.svdvals(W) ** 2
    own = float(sharing.evr_area(torch.sort(s2, descending=True).values, K))
    areas = []
    for _ in range(400):
        rotated = [haar(6, g) @ W @ haar(12, g) for _ in range(N)]   # Q_i W R_i
        G = sum(X @ X.T for X in rotated)                               # the row-mode Gram
        areas.append(float(sharing.evr_area(torch.linalg.eigvalsh(G).flip(0).clamp_min(0), K)))
    reference = own - float(np.mean(areas))
    got = sharing.ceiling_area(s2, N, K, 6, 400, torch.Generator().manual_seed(0))
    assert got == pytest.approx(reference, abs=0.01)
    assert 0 < got < 1
    head = torch.tensor([1.0], dtype=F64)  # a 1×128 matrix: one singular value
    col = sharing.ceiling_area(head, 4, 16, 128, 32, torch.Generator().manual_seed(0))
    row = sharing.ceiling_area(head, 4, 16, 1, 32, torch.Generator().manual_seed(0))
    assert row == pytest.approx(0.0, abs=1e-12)
    assert 0.03 < (row + col) / 2 < 0.06


def test_flip_margin_is_where_the_view_verdict_changes():
    """Below the flip margin the view is called shared, above it not; a view not shared at
    margin 0 has none (NaN)."""
    rng = np.random.default_rng(0)
    nulls = [rng.normal(0.5, 0.01, 99) for _ in range(6)]
    T = np.array([0.62, 0.58, 0.555, 0.53, 0.49, 0.5])
    m = stats.flip_margin(T, nulls, 0.05, 0.5)
    assert 0 < m < 0.12
    assert stats.view_called(T, nulls, m, 0.05, 0.5)
    assert not stats.view_called(T, nulls, m + 2e-4, 0.05, 0.5)
    assert np.isnan(stats.flip_margin(np.array([0.5, 0.49]), nulls[:2], 0.05, 0.5))


def sequential_p(Ws, draws, K, seed, stop_after):
    """p of a stack from ``sharing.sequential_null`` (Besag & Clifford) with its two modes."""
    s = [sharing.singular_values(W) for W in Ws]
    modes = [sharing.NullMode(d, [sharing.philox_key(seed, j, i) for i in range(len(Ws))])
             for j, d in enumerate(Ws.shape[1:])]
    T = statistic(Ws, K)
    _, areas, _ = sharing.sequential_null(s, modes, K, float((Ws ** 2).sum()), T, draws, stop_after)
    return stats.empirical_p(T, areas.mean(1).numpy(), draws), len(areas)


def test_the_sequential_null_stops_early_only_where_the_call_cannot_change_and_keeps_alpha():
    """Stopped once 10 draws reach the statistic: independent stacks stop after a few draws with
    P(p ≤ 0.05) still ≤ 0.05; shared stacks use all 99 and keep the floor 1/100; every call
    (p ≤ 0.05) equals the full 99 draws' (whose first draws are the same)."""
    g = torch.Generator().manual_seed(7)
    ps, used, same = [], [], 0
    for i in range(120):
        Ws = independent_stack(6, 8, 5, g)
        p, n = sequential_p(Ws, 99, 3, i, 10)
        ps.append(p)
        used.append(n)
        if i < 15:  # against all 99 draws
            same += (p <= 0.05) == (sequential_p(Ws, 99, 3, i, 0)[0] <= 0.05)
    assert np.mean(np.array(ps) <= 0.05) <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 120)
    assert np.median(used) <= 25 and same == 15
    for i in range(3):
        p, n = sequential_p(shared_stack(6, 8, 5, g), 99, 3, 100 + i, 10)
        assert (p, n) == (0.01, 99)
    assert stats.empirical_p(0.5, np.array([0.6] * 10 + [0.1] * 10), max_draws=99) == 0.5  # h / l


def test_area_bound_from_a_draws_leading_columns_is_above_the_draw_and_exact_with_every_column():
    """``draw_area_bound`` (Ky Fan, from each frame's first h columns): never below the draw's own
    area, on independent and on heavy-headed spectra, over many draws; equal to it when h is
    every column; and the frames it reads are the leading columns of the full draw's frames."""
    g = torch.Generator().manual_seed(11)
    N, dim, r, K = 6, 24, 12, 8
    flat = torch.rand(N, r, generator=g, dtype=F64) + 0.5
    steep = 3.0 ** -torch.arange(r, dtype=F64).expand(N, -1) * (1 + torch.rand(N, r, generator=g, dtype=F64))
    for S in (torch.sort(flat, descending=True).values, steep):
        total = float((S ** 2).sum())
        gaps = []
        for _ in range(40):
            X = torch.randn(N, dim, r, generator=g, dtype=F64)
            exact = float(sharing.evr_area(sharing.draw_eigenvalues(X, S), K, total))
            for h in (1, 3, 6):
                assert sharing.draw_area_bound(X, S, K, total, h) >= exact - 1e-12
            gaps.append(sharing.draw_area_bound(X, S, K, total, 3) - exact)
            assert sharing.draw_area_bound(X, S, K, total, r) == pytest.approx(exact, abs=1e-12)
        assert max(gaps) > 1e-3  # a bound, not the draw itself
        torch.testing.assert_close(sharing.haar_frames(X[..., :3]), sharing.haar_frames(X)[..., :3], atol=1e-12, rtol=0)


def explicit_null_grams(svals, mode, draws):
    """Reference: G_l = Σ_i F_il diag(s_i²) F_ilᵀ, each model's frame the QR of its own draw-l
    Gaussian (numpy Philox at counter (0, l, 0, 0)), with R's diagonal made positive."""
    out = []
    for l in draws:
        G = torch.zeros(mode.dim, mode.dim, dtype=F64)
        for key, s in zip(mode.keys, svals):
            x = np.random.Generator(np.random.Philox(key=key, counter=[0, l, 0, 0])).standard_normal(
                (mode.dim, len(s)), dtype=np.float32)
            q, r = np.linalg.qr(x.astype(np.float64))
            F = torch.from_numpy(q * np.sign(np.diag(r)))
            G += F @ torch.diag(s ** 2) @ F.T
        out.append(G)
    return torch.stack(out)


@pytest.mark.parametrize("dim, ranks", [(6, [4, 4, 4]), (12, [2, 3, 1, 2])])  # wide: dim ≤ Σr; narrow
def test_null_draws_are_each_models_own_frames_and_any_chunk_gives_the_same_draw(dim, ranks):
    """``null_chunk`` against explicit Grams of every model's own Philox frame (1e-10): the
    wide path's Gram and eigenvalues, the narrow path's eigenvalues (its Σr × Σr Gram has the
    same non-zero spectrum); draws 3..6 alone equal the same draws inside 0..8."""
    g = torch.Generator().manual_seed(4)
    svals = [torch.sort(torch.rand(r, generator=g, dtype=F64) + 0.1, descending=True).values for r in ranks]
    mode = sharing.NullMode(dim, [sharing.philox_key("t", "row", i) for i in range(len(ranks))])
    ref = explicit_null_grams(svals, mode, range(8))
    lam, G = sharing.null_chunk(svals, mode, range(8))
    n = min(dim, sum(ranks))
    torch.testing.assert_close(lam, torch.linalg.eigvalsh(ref).flip(-1)[:, :n], atol=1e-10, rtol=0)
    if dim <= sum(ranks):
        torch.testing.assert_close(G, ref, atol=1e-10, rtol=0)
    else:
        assert G is None
    torch.testing.assert_close(sharing.null_chunk(svals, mode, range(3, 6))[0], lam[3:6], atol=1e-12, rtol=0)


def test_an_added_model_adds_its_own_contribution_to_cached_null_grams():
    """The null of N + 2 models from the N models' cached Grams plus the 2 new models' frames
    equals the null of all N + 2 drawn afresh (same draws, any model order, 1e-10); the cache
    may hold fewer draws than asked (the rest are drawn for every model), and a sequential stop
    is at the same draw."""
    g = torch.Generator().manual_seed(6)
    N, dim, r, K = 7, 9, 5, 3
    svals = [torch.sort(torch.rand(r, generator=g, dtype=F64), descending=True).values for _ in range(N)]
    keys = [sharing.philox_key(0, "w", "row", f"m{i}") for i in range(N)]
    total = float(sum((s ** 2).sum() for s in svals))
    _, _, (old,) = sharing.sequential_null(svals[:5], [sharing.NullMode(dim, keys[:5])], K, total, 2.0, 22, 0, True)
    assert old.shape == (22, dim, dim)
    fresh = sharing.sequential_null(svals, [sharing.NullMode(dim, keys)], K, total, 2.0, 33, 0, True)
    added = sharing.sequential_null(svals, [sharing.NullMode(dim, keys, old, 5)], K, total, 2.0, 33, 0, True)
    order = [6, 2, 0, 5, 1, 3, 4]
    shuffled = sharing.sequential_null([svals[i] for i in order], [sharing.NullMode(dim, [keys[i] for i in order])],
                                       K, total, 2.0, 33, 0, True)
    for other in (added, shuffled):
        torch.testing.assert_close(other[0][0], fresh[0][0], atol=1e-10, rtol=0)
        torch.testing.assert_close(other[1], fresh[1], atol=1e-10, rtol=0)
        torch.testing.assert_close(other[2][0], fresh[2][0], atol=1e-10, rtol=0)
    T = float(fresh[1][:, 0].sort().values[20])  # a statistic that 12 of the 33 draws reach
    stopped = sharing.sequential_null(svals, [sharing.NullMode(dim, keys, old, 5)], K, total, T, 33, 4, True)
    reached = np.cumsum(fresh[1][:, 0].numpy() >= T)
    assert len(stopped[1]) == int(np.argmax(reached >= 4)) + 1
    torch.testing.assert_close(stopped[1], fresh[1][: len(stopped[1])], atol=1e-10, rtol=0)
