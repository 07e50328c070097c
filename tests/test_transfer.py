"""The transfer statistics (weightspace.core.transfer) against references, and the transfer test
(weightspace.transfer.energy_table) on synthetic collections: planted shared directions are
found, unrelated ones are called at no more than the stated rate; the zoo's data sets."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from weightspace import transfer, zoo, zoospec
from weightspace.core import transfer as tr
from weightspace.core.sharing import haar_frames

F64 = torch.float64


def frame(d, k, g):
    return haar_frames(torch.randn(d, k, generator=g, dtype=F64))


def test_captured_energy_is_the_projected_stack_energy():
    """tr(Uᵀ G U)/tr(G) with G = Σ X_i X_iᵀ equals Σ‖Uᵀ X_i‖² / Σ‖X_i‖²; own_energy equals the
    top-k eigenvalues' share (numpy) and bounds every k-frame's capture (Ky Fan)."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(7, 12, 9, generator=g, dtype=F64)
    G = sum(tr.mode_gram(x, "row") for x in X)
    U = frame(12, 3, g)
    direct = float(sum((U.T @ x).pow(2).sum() for x in X) / X.pow(2).sum())
    assert tr.captured_energy(U, G) == pytest.approx(direct, rel=1e-12)
    lam = np.sort(np.linalg.eigvalsh(G.numpy()))[::-1]
    assert tr.own_energy(G, 3) == pytest.approx(lam[:3].sum() / lam.sum(), rel=1e-12)
    assert tr.own_energy(G, 3) >= tr.captured_energy(U, G)
    Gc = sum(tr.mode_gram(x, "col") for x in X)
    assert torch.allclose(Gc, sum(x.T @ x for x in X))


def test_overlap_and_principal_angles_against_numpy():
    g = torch.Generator().manual_seed(1)
    A, B = frame(20, 4, g), frame(20, 4, g)
    s = np.linalg.svd(A.numpy().T @ B.numpy(), compute_uv=False)
    assert tr.overlap(A, B) == pytest.approx(float((s ** 2).mean()), rel=1e-12)
    assert np.allclose(np.sort(tr.principal_angles(A, B)), np.sort(np.degrees(np.arccos(np.clip(s, 0, 1)))))
    assert tr.overlap(A, A) == pytest.approx(1.0, abs=1e-12)
    assert np.allclose(tr.principal_angles(A, A), 0, atol=1e-5)


def test_haar_null_has_mean_k_over_d():
    """E tr(FᵀGF)/tr(G) = k/d for a Haar frame F, whatever G."""
    g = torch.Generator().manual_seed(2)
    X = torch.randn(30, 5, generator=g, dtype=F64) * torch.logspace(0, -2, 5, dtype=F64)
    G = X.T @ X  # 5×5, very anisotropic
    draws = tr.haar_energy_draws(G, 2, 4000, torch.Generator().manual_seed(0))
    assert draws.mean() == pytest.approx(2 / 5, abs=0.01)
    assert tr.above_chance(0.4, 0.8, 0.4) == 0.0 and tr.above_chance(0.8, 0.8, 0.4) == 1.0


def collection(directions, N, m, n, g, strength=3.0):
    """N matrices m×n: planted shared row directions (``directions``: m×r, or None) with random
    weights, plus i.i.d. noise; returned as the subspace records the stage reads (mean, U from
    the centred stack's row/col Grams) and the centred row/col Grams."""
    W = torch.randn(N, m, n, generator=g, dtype=F64)
    if directions is not None:
        W = W + strength * directions @ torch.randn(N, directions.shape[1], n, generator=g, dtype=F64)
    mean = W.mean(0)
    X = W - mean
    Gr, Gc = sum(x @ x.T for x in X), sum(x.T @ x for x in X)
    U_row = torch.linalg.eigh(Gr)[1].flip(1)
    U_col = torch.linalg.eigh(Gc)[1].flip(1)
    return SimpleNamespace(shape=(m, n), mean=mean, U_row=U_row, U_col=U_col), {("w", "row"): Gr, ("w", "col"): Gc}


def test_planted_shared_directions_transfer_and_unrelated_ones_at_the_stated_rate():
    """Two collections with the same planted 3 row directions (different weights and noise):
    A's row subspace transfers to B (p at the floor, ratio near 1); the column mode (pure noise,
    nothing shared) does not. Over 200 pairs of collections with unrelated planted directions
    the row mode's p ≤ 0.1 in at most ~10% of them (the null is exact)."""
    g = torch.Generator().manual_seed(5)
    m, n, N, k = 24, 20, 12, 3
    P = frame(m, 3, g)
    a, _ = collection(P, N, m, n, g)
    b, grams = collection(P, N, m, n, g)
    comps = [{"a": "w", "b": "w", "mode": mode, "where": "same matrix"} for mode in ("row", "col")]
    t = transfer.energy_table({"w": a}, {"w": b}, grams, comps, k, 99, 0, 0.05, 0.05, 0.5).set_index("mode")
    assert t.loc["row", "p"] == pytest.approx(0.01)
    assert bool(t.loc["row", "transfers"]) and t.loc["row", "ratio"] > 0.9 and t.loc["row", "overlap"] > 0.8
    assert not bool(t.loc["col", "transfers"])
    verdict = transfer.pair_verdict(t.reset_index(), 0.5)
    assert verdict["rows_transfer"] == 1 and verdict["verdict"] == "transfers"
    hits = 0
    for _ in range(200):
        a, _ = collection(frame(m, 3, g), 6, m, n, g)
        b, grams = collection(frame(m, 3, g), 6, m, n, g)
        t = transfer.energy_table({"w": a}, {"w": b}, grams, comps[:1], k, 39, int(g.seed() % 1000), 0.0, 1.0, 0.0)
        hits += t["p"].iloc[0] <= 0.1
    assert hits / 200 <= 0.1 + 3 * (0.1 * 0.9 / 200) ** 0.5


def test_meeting_modes_of_two_architectures():
    """Other shapes: the first matrix's input features and the last one's outputs, in depth
    order; a declared match of two widths; a mismatched declaration is refused."""
    def rec(m, n):
        return SimpleNamespace(shape=(m, n))
    a = {"fc1.weight": rec(128, 64), "fc2.weight": rec(128, 128), "fc3.weight": rec(10, 128)}
    b = {"fc1.weight": rec(256, 64), "fc2.weight": rec(128, 256), "fc10.weight": rec(10, 64), "fc3.weight": rec(64, 128)}
    got = transfer.meeting_modes(a, b, [["fc2.weight:row", "fc2.weight:row"]])
    assert [(c["a"], c["b"], c["mode"], c["where"]) for c in got] == [
        ("fc1.weight", "fc1.weight", "col", "input features"), ("fc3.weight", "fc10.weight", "row", "outputs"),
        ("fc2.weight", "fc2.weight", "row", "declared")]
    with pytest.raises(ValueError, match="dimensions"):
        transfer.meeting_modes(a, b, [["fc1.weight:row", "fc1.weight:row"]])
    same = transfer.meeting_modes(a, a)
    assert len(same) == 6 and {c["where"] for c in same} == {"same matrix"}


def test_collections_of_one_seed_start_from_the_same_weights_whatever_their_data():
    """shared_init with one seed: the first weights of a digits and an MNIST collection are
    equal (one step of training at lr ~0 leaves the init); another seed gives others."""
    spec = zoospec.normalize_spec({"kind": "mlp", "count": 2, "hidden": [16], "shared_init": True, "seed": 0,
                               "steps": 1, "lr": 1e-12, "batch_size": 8, "data_fraction": 0.5})
    digits = zoo.train_mlps(spec, zoo.load_dataset("digits"), zoospec.zoo_tasks(spec))
    mnist = zoo.train_mlps(dict(spec, dataset="mnist"), zoo.load_dataset("mnist"), zoospec.zoo_tasks(dict(spec, dataset="mnist")))
    other = zoo.train_mlps(dict(spec, seed=1), zoo.load_dataset("digits"), zoospec.zoo_tasks(dict(spec, seed=1)))
    for name in digits[0]:
        assert torch.allclose(digits[0][name], mnist[0][name], atol=1e-9)
    assert not torch.allclose(digits[0]["fc1.weight"], other[0]["fc1.weight"])


def test_mnist_and_fashion_are_pooled_like_the_digits():
    """8×8 images in [0, 1] in steps of 1/16, ten classes, a 70/30 split of 5000 images; the
    pooling is the mean of the 3.5×3.5 input pixels (a constant image stays constant)."""
    d = zoo.load_dataset("mnist")
    x = torch.cat([d.x_train, d.x_test])
    assert x.shape == (5000, 64) and float(x.min()) == 0 and float(x.max()) <= 1
    assert torch.equal(torch.round(x * 16), x * 16)
    assert set(torch.cat([d.y_train, d.y_test]).tolist()) == set(range(10))
    assert np.allclose(zoo.pool_to_8x8(np.full((1, 784), 255.0)), 1.0)
    task = zoospec.with_dataset({"kind": "digits", "label": "x"}, {"dataset": "mnist"})
    assert task["dataset"] == "mnist" and zoo.task_dataset(task) is d
    try:
        f = zoo.load_dataset("fashion")
    except FileNotFoundError as e:
        assert "dataset-fashion-mnist" in str(e)
        pytest.skip("Debian's dataset-fashion-mnist is not installed (.ci/run installs it)")
    assert f.x_train.shape == (3500, 64) and float(f.x_train.max()) <= 1
    assert set(f.y_train.tolist()) == set(range(10))


def test_fashion_without_its_files_says_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        zoo.fashion_arrays(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\0\0\x08\x03" + (5).to_bytes(4, "big") * 3 + b"\0" * 10)
    with pytest.raises(ValueError, match="truncated"):
        zoo.read_idx(tmp_path / "train-images-idx3-ubyte")
