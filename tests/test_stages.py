"""The subspace, project and evaluate stages on small stores, against the in-memory math."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from weightspace.core import hosvd
from weightspace.core import sharing, stats
from weightspace.project import coefficients, project_models
from weightspace.store import write_store
from weightspace.spectra import sharing_table, spectra_table
from weightspace.subspace import STOP_AFTER, ArchitectureError, load_subspaces, run_group

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def make_stores(tmp_path, N=6, shapes=None, seed=0):
    shapes = shapes or {"a.weight": (7, 5), "b.weight": (4, 9), "conv.weight": (3, 2, 2, 2), "a.bias": (7,)}
    g = torch.Generator().manual_seed(seed)
    paths, tensors = [], []
    for i in range(N):
        t = {k: torch.randn(*s, generator=g) for k, s in shapes.items()}
        p = tmp_path / f"m{i}.zarr"
        write_store(p, t.items(), {"model": f"m{i}"})
        paths.append(str(p))
        tensors.append(t)
    return paths, tensors


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_groups_cover_targets_and_match_in_memory_decomposition(tmp_path, device, precision):
    paths, tensors = make_stores(tmp_path)
    groups = [str(tmp_path / f"g{g}.zarr") for g in range(2)]
    for g, out in enumerate(groups):
        run_group(paths, "full", 2, g, out, max_k=3, center=True, gaussian_null=True,
                  rotation_null=True, seed=0, device=device, precision=precision)
    subs, models = load_subspaces(groups)
    assert models == [f"m{i}" for i in range(6)]
    assert sorted(subs) == ["a.weight", "b.weight", "conv.weight"]  # 1-D bias is kept, not decomposed
    for name, sub in subs.items():
        Ws = torch.stack([t[name].reshape(t[name].shape[0], -1).double() for t in tensors])
        s = hosvd.ModeSums(*Ws.shape[1:])
        for W in Ws:
            s.add(W)
        ref = hosvd.decompose(s, torch.einsum("imn,jmn->ij", Ws, Ws), 3)
        np.testing.assert_allclose(sub.mean, Ws.mean(0), atol=1e-6)  # stored as float32
        tol = 1e-10 if precision == "float64" else 1e-5  # float32 products: ~2^-24·sqrt(n)
        signs_r = torch.sign((sub.U_row * ref.U_row).sum(0))
        np.testing.assert_allclose(sub.U_row * signs_r, ref.U_row, atol=tol)
        np.testing.assert_allclose(sub.array("eig_row"), ref.eig_row, rtol=tol, atol=tol)
        np.testing.assert_allclose(sub.array("eig_model"), ref.eig_model, rtol=1e-10, atol=1e-10)
        assert {"null_gaussian_row", "null_rotation_row"} <= set(sub.keys())
        # the sharing statistic is the one of the explicit uncentred Grams, and p is its rank
        test = sub.attrs["sharing"]
        total = float((Ws ** 2).sum())
        T = [sharing.evr_area(torch.linalg.eigvalsh(G).flip(0), test["K"], total)
             for G in (torch.einsum("imn,ikn->mk", Ws, Ws), torch.einsum("imn,imk->nk", Ws, Ws))]
        assert test["statistic"] == pytest.approx(float(sum(T) / 2), rel=tol)
        null = sub.array("null_rotation_statistic").mean(1)  # draws × (row, col), averaged over modes
        assert sub.array("null_rotation_statistic").shape == (test["draws"], 2) and test["max_draws"] == 99
        # Besag & Clifford: all 99 draws, or stopped at the draw where STOP_AFTER reach the statistic
        reached = np.cumsum(null >= test["statistic"])
        assert (test["draws"] == 99 and reached[-1] <= STOP_AFTER) or (
            reached[-1] == STOP_AFTER and reached[-2] == STOP_AFTER - 1)
    table = spectra_table(groups)
    assert set(table["mode"]) == {"row", "col", "model"}
    verdict = sharing_table(groups, 0.05, margin=0.01)
    assert list(verdict["target"]) == sorted(subs) and verdict["q"].notna().all()
    np.testing.assert_allclose(verdict["q"], stats.benjamini_hochberg(verdict["p"].to_numpy()))
    for row in verdict.itertuples():  # p is the rank of T among the draws shifted by the margin
        draws = subs[row.target].array("null_rotation_statistic").mean(1)
        hits = (draws + 0.01 >= row.statistic).sum()
        assert row.p == pytest.approx((1 + hits) / 100 if len(draws) == 99 else hits / len(draws))
        assert row.shared == (row.q <= 0.05)
    last = table.groupby(["target", "mode", "centered", "source"])["explained"].last()
    np.testing.assert_allclose(last, 1.0, atol=1e-9)


def test_projection_of_heldout_uses_stored_basis(tmp_path):
    paths, tensors = make_stores(tmp_path, N=8)
    out = str(tmp_path / "g.zarr")
    run_group(paths[:6], "full", 1, 0, out, max_k=3, center=True, gaussian_null=False,
              rotation_null=False, seed=0, device="cpu")
    subs, _ = load_subspaces([out])
    energy = project_models(paths, subs, "full", str(tmp_path / "c.zarr"), [1, 3],
                            {f"m{i}": "basis" if i < 6 else "heldout" for i in range(8)})
    import zarr
    coeffs = zarr.open_group(str(tmp_path / "c.zarr"), mode="r")
    sub = subs["a.weight"]
    W = tensors[7]["a.weight"].double()
    np.testing.assert_allclose(coeffs["a.weight"][7], coefficients(W, sub.mean, sub.U_row, sub.U_col), atol=1e-5)
    assert ((energy["captured"] >= 0) & (energy["captured"] <= 1 + 1e-9)).all()
    assert set(energy["split"]) == {"basis", "heldout"}


def test_model_of_another_architecture_is_named(tmp_path):
    paths, _ = make_stores(tmp_path, N=3)
    other = tmp_path / "odd.zarr"
    write_store(other, [("a.weight", torch.zeros(7, 6)), ("b.weight", torch.zeros(4, 9)),
                        ("conv.weight", torch.zeros(3, 2, 2, 2))], {"model": "odd"})
    with pytest.raises(ArchitectureError, match=r"model odd does not match reference model m0.*a\.weight"):
        run_group(paths + [str(other)], "full", 1, 0, str(tmp_path / "g.zarr"), max_k=2, center=True,
                  gaussian_null=False, rotation_null=False, seed=0, device="cpu")
    assert not (tmp_path / "g.zarr").exists()


def lora_stores(tmp_path, N, seed=0):
    g = torch.Generator().manual_seed(seed)
    p = "base_model.model."
    paths = []
    for i in range(N):
        t = {f"{p}fc1.lora_A.weight": torch.randn(2, 6, generator=g),
             f"{p}fc1.lora_B.weight": torch.randn(5, 2, generator=g)}
        path = tmp_path / f"a{i}.zarr"
        write_store(path, t.items(), {"model": f"a{i}", "revision": "r" * 40,
                                      "adapter_config": {"r": 2, "lora_alpha": 4}})
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("view", ["full", "delta"])
def test_incremental_sums_equal_from_scratch(tmp_path, view, caplog, monkeypatch):
    """Adding 3 models to 5 cached ones: every array equals a run from scratch on the 8, the
    rotation null's included, whose draws come from the cached Grams plus frames of the 3 new
    models only (an added model adds its own contribution)."""
    from weightspace.core import sharing

    paths = make_stores(tmp_path, N=8)[0] if view == "full" else lora_stores(tmp_path, 8)
    kw = dict(max_k=3, center=True, gaussian_null=True, rotation_null=True, seed=0, device="cpu")
    cache = str(tmp_path / "cache.zarr")
    run_group(paths[:5], view, 1, 0, str(tmp_path / "old.zarr"), cache_path=cache, **kw)
    import zarr

    held = {t: zarr.open_group(cache)[t]["null_gram_row"].shape[0] for t in zarr.open_group(cache)}
    drawn, real = [], sharing.model_gaussians
    monkeypatch.setattr(sharing, "model_gaussians", lambda key, *a: drawn.append((key, a[-1])) or real(key, *a))
    with caplog.at_level("INFO", logger="weightspace"):
        run_group(paths, view, 1, 0, str(tmp_path / "inc.zarr"), cache_path=cache, **kw)
    monkeypatch.setattr(sharing, "model_gaussians", real)
    assert "reusing the sums of 5 models, reading 3 new" in caplog.text
    model = {sharing.philox_key(0, t, mode, f"{'m' if view == 'full' else 'a'}{i}"): (t, i)
             for t in held for mode in ("row", "col") for i in range(8)}
    old = [(model[key], rng) for key, rng in drawn if model[key][1] < 5]
    assert any(model[key][1] >= 5 for key, _ in drawn)
    assert all(rng.start >= held[t] for (t, _), rng in old)  # a cached model only where the cache ends
    run_group(paths, view, 1, 0, str(tmp_path / "fresh.zarr"), **kw)
    inc, models_inc = load_subspaces([str(tmp_path / "inc.zarr")])
    fresh, models_fresh = load_subspaces([str(tmp_path / "fresh.zarr")])
    assert models_inc == models_fresh
    for name in fresh:
        assert inc[name].attrs["sharing"] == fresh[name].attrs["sharing"]  # same draws, any order
        for arr in ("eig_row", "eig_col", "eig_model", "gram_model", "null_rotation_row",
                    "null_rotation_statistic", "null_gaussian_row", "null_gaussian_col", "U_row"):
            a, b = inc[name].array(arr), fresh[name].array(arr)
            if arr == "U_row":
                a = a * np.sign((a * b).sum(0))
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)
    # a model leaving the basis invalidates the cache instead of giving wrong sums
    with caplog.at_level("INFO", logger="weightspace"):
        run_group(paths[1:], view, 1, 0, str(tmp_path / "less.zarr"), cache_path=cache, **kw)
    assert "no longer in the basis; starting afresh" in caplog.text


def test_incremental_float32_sums_keep_their_shift(tmp_path, caplog):
    """With float32 products the sums are of W − c (c the first model): the cache keeps c, so
    models added later are shifted alike and the result equals a run from scratch; a cache
    made at another precision is not reused."""
    paths = make_stores(tmp_path, N=8)[0]
    kw = dict(max_k=3, center=True, gaussian_null=True, rotation_null=False, seed=0, device="cpu")
    cache = str(tmp_path / "cache.zarr")
    run_group(paths[:5], "full", 1, 0, str(tmp_path / "old.zarr"), cache_path=cache, precision="float32", **kw)
    with caplog.at_level("INFO", logger="weightspace"):
        run_group(paths, "full", 1, 0, str(tmp_path / "inc.zarr"), cache_path=cache, precision="float32", **kw)
    assert "reusing the sums of 5 models, reading 3 new" in caplog.text
    run_group(paths, "full", 1, 0, str(tmp_path / "fresh.zarr"), precision="float64", **kw)
    inc, _ = load_subspaces([str(tmp_path / "inc.zarr")])
    fresh, _ = load_subspaces([str(tmp_path / "fresh.zarr")])
    for name in fresh:
        for arr in ("eig_row", "eig_col", "eig_row_uncentered", "eig_col_uncentered", "mean"):
            np.testing.assert_allclose(inc[name].array(arr), fresh[name].array(arr), rtol=2e-5, atol=1e-9)
    caplog.clear()
    with caplog.at_level("INFO", logger="weightspace"):
        run_group(paths, "full", 1, 0, str(tmp_path / "f64.zarr"), cache_path=cache, precision="float64", **kw)
    assert "reusing" not in caplog.text


def test_large_mode_switches_to_sketch_and_says_so(tmp_path, caplog):
    paths, _ = make_stores(tmp_path, N=6, shapes={"w": (5, 40)})
    with caplog.at_level("INFO", logger="weightspace"):
        run_group(paths, "full", 1, 0, str(tmp_path / "g.zarr"), max_k=3, center=True, gaussian_null=True,
                  rotation_null=True, seed=0, device="cpu", exact_max_dim=10, cache_path=str(tmp_path / "c.zarr"))
    assert ("w (5, 40): row mode exact 5×5 Gram; col mode two-pass Nyström sketch, width 7; "
            "no rotation null for a sketched mode") in caplog.text
    subs, _ = load_subspaces([str(tmp_path / "g.zarr")])
    assert subs["w"].attrs["methods"]["col"] == "two-pass Nyström sketch, width 7"
    assert subs["w"].U_col.shape == (40, 3) and len(subs["w"].array("eig_col")) == 7
    assert "null_rotation_col" not in subs["w"].keys() and "null_rotation_row" in subs["w"].keys()
    table = spectra_table([str(tmp_path / "g.zarr")])
    col = table[(table["mode"] == "col") & table["centered"] & (table["source"] == "data")]
    assert col["explained"].max() <= 1 + 1e-9
    # the cache keeps the sketch: a rerun with one model more reuses it
    more, _ = make_stores(tmp_path / "more", N=7, shapes={"w": (5, 40)})
    with caplog.at_level("INFO", logger="weightspace"):
        run_group(paths + more[6:], "full", 1, 0, str(tmp_path / "g2.zarr"), max_k=3, center=True,
                  gaussian_null=True, rotation_null=True, seed=0, device="cpu", exact_max_dim=10,
                  cache_path=str(tmp_path / "c.zarr"))
    assert "reusing the sums of 6 models, reading 1 new" in caplog.text


def test_column_mode_sketched_when_cheaper_and_close_to_exact(tmp_path, caplog):
    """Without the rotation null a wide column mode is sketched (two passes) automatically, and
    its leading directions and eigenvalues agree with the exact Gram's; with the rotation null
    asked for, the same mode stays exact."""
    g = torch.Generator().manual_seed(3)
    m, n, N, r = 12, 160, 9, 3
    P, Q = torch.randn(m, r, generator=g), torch.randn(r, n, generator=g)
    base = torch.randn(m, n, generator=g)
    paths = []
    for i in range(N):
        W = base + P @ torch.diag(torch.randn(r, generator=g) * 3) @ Q + 0.01 * torch.randn(m, n, generator=g)
        p = str(tmp_path / f"m{i}.zarr")
        write_store(p, [("w", W)], {"model": f"m{i}"})
        paths.append(p)
    kw = dict(max_k=2, center=True, gaussian_null=False, seed=0, device="cpu")
    with caplog.at_level("INFO", logger="weightspace"):
        run_group(paths, "full", 1, 0, str(tmp_path / "fast.zarr"), rotation_null=False, **kw)
        run_group(paths, "full", 1, 0, str(tmp_path / "exact.zarr"), rotation_null=True, **kw)
    assert "col mode two-pass Nyström sketch, width 5" in caplog.text  # 160 ≥ 6·5
    fast = load_subspaces([str(tmp_path / "fast.zarr")])[0]["w"]
    exact = load_subspaces([str(tmp_path / "exact.zarr")])[0]["w"]
    assert exact.attrs["methods"]["col"] == "exact 160×160 Gram" and len(exact.array("eig_col")) == n
    assert len(fast.array("eig_col")) == 5
    np.testing.assert_allclose(fast.array("eig_col")[:2], exact.array("eig_col")[:2], rtol=1e-6)
    angles = torch.linalg.svdvals(fast.U_col.T @ exact.U_col)
    assert float(angles.min()) > 1 - 1e-8
    np.testing.assert_allclose(fast.U_row, exact.U_row, atol=1e-10)  # the row mode is exact in both
    # uncentred, there is no second pass, and the stored method says so
    run_group(paths, "full", 1, 0, str(tmp_path / "raw.zarr"), rotation_null=False,
              **{**kw, "center": False})
    raw = load_subspaces([str(tmp_path / "raw.zarr")])[0]["w"]
    assert raw.attrs["methods"]["col"] == "one-pass Nyström sketch, width 5"


def test_dense_target_does_not_keep_models_in_memory(tmp_path, monkeypatch):
    """Memory must not grow with N: no model's matrix may outlive its step of the stream."""
    import gc
    import weakref

    from weightspace import subspace

    paths, _ = make_stores(tmp_path, N=6, shapes={"w": (8, 5)})
    alive, peak = [], [0]
    real = hosvd.ModeSums.add

    def tracking(self, W):  # the matrices the stage streams into the sums
        gc.collect()
        peak[0] = max(peak[0], sum(r() is not None for r in alive))
        alive.append(weakref.ref(W))
        return real(self, W)

    monkeypatch.setattr(hosvd.ModeSums, "add", tracking)
    store = subspace.ModelStore(paths[0])
    target = subspace.layers.targets(store, "full")[0]
    stores = [subspace.ModelStore(p) for p in paths]
    subspace.decompose_target(stores, target, max_k=2, center=True, gaussian_null=False,
                              rotation_null=False, seed=0, device="cpu")
    assert len(alive) == 6 and peak[0] <= 1, f"{peak[0]} earlier models still in memory"


def test_memory_estimate_covers_what_the_stage_allocates(tmp_path):
    from weightspace.subspace import memory_estimate_mb

    paths, _ = make_stores(tmp_path, N=6, shapes={"a": (30, 200), "b": (12, 40)})
    cache = tmp_path / "cache.zarr"
    run_group(paths, "full", 1, 0, str(tmp_path / "g.zarr"), max_k=4, center=True, gaussian_null=True,
              rotation_null=True, seed=0, device="cpu", cache_path=str(cache))
    import zarr
    allocated = max(sum(a.nbytes for _, a in g.arrays()) for _, g in zarr.open_group(str(cache)).groups())
    est = memory_estimate_mb(paths[0], "full", 1, 0, 6, max_k=4, base_mb=0)
    assert est * 2**20 >= allocated
    # grows with the squared mode size, and a sketched mode costs less than a Gram
    big = memory_estimate_mb(paths[0], "full", 1, 0, 6, max_k=4, base_mb=0, exact_max_dim=10**6)
    sketched = memory_estimate_mb(paths[0], "full", 1, 0, 6, max_k=4, base_mb=0, exact_max_dim=100)
    assert sketched < big


def test_a_retrained_model_under_the_same_key_is_not_read_from_the_cache(tmp_path, caplog):
    """A zoo (or local) model retrained under the same key and lock revision has other files:
    its content digest differs, so the cached sums are not reused (they were, before: a changed
    zoo seed left the old models' sums in the subspace)."""
    from weightspace.extract import content_digest, extract_model
    from weightspace.layers import manifest

    kw = dict(max_k=2, center=True, gaussian_null=False, rotation_null=False, seed=0, device="cpu")
    cache, paths = str(tmp_path / "cache.zarr"), []
    for version in (0, 1):
        paths = []
        for i in range(4):
            folder = tmp_path / f"v{version}" / f"m{i}"
            folder.mkdir(parents=True)
            g = torch.Generator().manual_seed(100 * version + i)
            save_file({"w": torch.randn(5, 3, generator=g)}, str(folder / "model.safetensors"))
            out = tmp_path / f"v{version}" / f"m{i}.zarr"
            extract_model(str(folder), str(out), f"m{i}", {"revision": "r" * 40},
                          content=content_digest(manifest(folder, f"m{i}")))
            paths.append(str(out))
        with caplog.at_level("INFO", logger="weightspace"):
            run_group(paths, "full", 1, 0, str(tmp_path / f"g{version}.zarr"), cache_path=cache, **kw)
    assert "reusing the sums" not in caplog.text
    run_group(paths, "full", 1, 0, str(tmp_path / "fresh.zarr"), **kw)
    cached, fresh = load_subspaces([str(tmp_path / "g1.zarr")])[0], load_subspaces([str(tmp_path / "fresh.zarr")])[0]
    np.testing.assert_allclose(cached["w"].array("eig_row"), fresh["w"].array("eig_row"), rtol=1e-12)


def test_basis_size_sweep_converges_on_shared_models_and_draws_are_nested(tmp_path, monkeypatch):
    """Fine-tunes of one matrix: held-out error at k falls with N below the mean-only error and
    every matrix is called shared; the draw for a smaller N is a prefix of a larger one."""
    from weightspace.sweep import nested_draw, sweep

    draws = nested_draw([f"m{i}" for i in range(10)], [2, 4, 8, 20], seed=3)
    assert sorted(draws) == [2, 4, 8] and draws[8][:4] == draws[4] and draws[4][:2] == draws[2]
    g = torch.Generator().manual_seed(0)
    W0 = torch.randn(12, 10, generator=g)
    U = torch.linalg.qr(torch.randn(12, 3, generator=g))[0]  # a shared 3×3 subspace of both modes
    V = torch.linalg.qr(torch.randn(10, 3, generator=g))[0]
    paths = []
    for i in range(14):
        W = W0 + U @ torch.randn(3, 3, generator=g) @ V.T + 0.01 * torch.randn(12, 10, generator=g)
        write_store(tmp_path / f"m{i}.zarr", {"a.weight": W}.items(), {"model": f"m{i}"})
        paths.append(str(tmp_path / f"m{i}.zarr"))
    t = sweep(paths[:10], paths[10:], "full", [2, 4, 10], k=3, seed=0, null_draws=19, test_k=4, fdr=0.05,
              margin=0.0, max_k=4)
    assert list(t["n_basis"]) == [2, 4, 10]
    assert t["heldout_error"].iloc[-1] < 0.5 * t["heldout_mean_only_error"].iloc[-1]
    assert t["heldout_error"].iloc[-1] < t["heldout_error"].iloc[0]
    assert t["matrices_shared"].iloc[-1] == t["matrices_tested"].iloc[-1] == 1

    # at N = all, the subspace stage's stored result of the same models stands in for a recompute:
    # the same errors (one decomposition), the same statistic, its own null draws; no decompose call
    run_group(paths[:10], "full", 1, 0, str(tmp_path / "g.zarr"), max_k=4, center=True, gaussian_null=False,
              rotation_null=True, seed=5, device="cpu", null_draws=19, test_k=4)
    from weightspace import sweep as sweep_mod

    calls = []
    real = sweep_mod.decompose_target
    monkeypatch.setattr(sweep_mod, "decompose_target", lambda *a, **kw: calls.append(len(a[0])) or real(*a, **kw))
    reused = sweep(paths[:10], paths[10:], "full", [2, 4, 10], k=3, seed=0, null_draws=19, test_k=4, fdr=0.05,
                   margin=0.0, max_k=4, stage=load_subspaces([str(tmp_path / "g.zarr")]))
    assert calls == [2, 4]
    cols = ["heldout_error", "heldout_error_centered", "heldout_mean_only_error"]
    np.testing.assert_allclose(reused[cols].to_numpy(), t[cols].to_numpy(), rtol=1e-6)  # the stage stores float32
    assert reused["matrices_shared"].iloc[-1] == 1
    rec = load_subspaces([str(tmp_path / "g.zarr")])[0]["a.weight"]
    excess = rec.attrs["sharing"]["statistic"] - rec.array("null_rotation_statistic").mean(1).mean()
    assert reused["median_excess"].iloc[-1] == pytest.approx(excess, rel=1e-12)
    assert reused["median_excess"].iloc[-1] == pytest.approx(t["median_excess"].iloc[-1], abs=0.02)  # other draws
    # a stage run with other test settings is not what the sweep would compute: recomputed
    calls.clear()
    sweep(paths[:10], paths[10:], "full", [10], k=3, seed=0, null_draws=39, test_k=4, fdr=0.05, margin=0.0,
          max_k=4, stage=load_subspaces([str(tmp_path / "g.zarr")]))
    assert calls == [10]


def test_model_gram_sketch_reads_only_added_models(tmp_path, monkeypatch, caplog):
    """model_gram: sketch. Adding 3 models to 12 cached ones reads only the 3 (never the cached
    stores); the cached block of the model Gram stays exact, the added block is exact, added ×
    cached entries are within 4 standard deviations (√(2/w)·‖W_i − R‖‖W_j − R‖) of the exact
    Gram; the row and column modes equal a run from scratch (their sums are exact)."""
    from weightspace import store as store_mod

    shapes = {"w": (24, 40)}
    paths, tensors = make_stores(tmp_path, N=15, shapes=shapes, seed=3)
    shared = torch.randn(24, 40, generator=torch.Generator().manual_seed(9)) * 3  # a common mean
    for p, t in zip(paths, tensors):  # rewrite the stores around it: models are the mean + spread
        t["w"] = t["w"] * 0.5 + shared
        write_store(p, t.items(), {"model": p.rsplit("/", 1)[-1].removesuffix(".zarr")})
    w = 1024
    kw = dict(max_k=4, center=True, gaussian_null=False, rotation_null=True, seed=0, device="cpu",
              model_gram="sketch", gram_sketch_width=w)
    cache = str(tmp_path / "cache.zarr")
    run_group(paths[:12], "full", 1, 0, str(tmp_path / "old.zarr"), cache_path=cache, **kw)
    read = []
    real_read = store_mod.ModelStore.read
    monkeypatch.setattr(store_mod.ModelStore, "read", lambda self, *a, **k: read.append(self.path) or real_read(self, *a, **k))
    with caplog.at_level("INFO", logger="weightspace"):
        run_group(paths, "full", 1, 0, str(tmp_path / "inc.zarr"), cache_path=cache, **kw)
    assert "reusing the sums of 12 models, reading 3 new" in caplog.text
    assert set(read) == set(paths[12:])  # the cached models were never read
    monkeypatch.setattr(store_mod.ModelStore, "read", real_read)
    run_group(paths, "full", 1, 0, str(tmp_path / "fresh.zarr"), **{**kw, "model_gram": "exact"})
    inc, _ = load_subspaces([str(tmp_path / "inc.zarr")])
    fresh, _ = load_subspaces([str(tmp_path / "fresh.zarr")])
    for arr in ("eig_row", "eig_col", "null_rotation_statistic"):
        np.testing.assert_allclose(inc["w"].array(arr), fresh["w"].array(arr), rtol=1e-9, atol=1e-9)
    W = torch.stack([t["w"].double() for t in tensors])
    K = torch.einsum("imn,jmn->ij", W, W)
    R = W[:12].mean(0)
    import zarr
    Kc = torch.from_numpy(np.asarray(zarr.open_group(cache)["w"]["K"][...]))
    assert torch.equal(Kc[:12, :12], K[:12, :12]) or torch.allclose(Kc[:12, :12], K[:12, :12], rtol=1e-12, atol=0)
    torch.testing.assert_close(Kc[12:, 12:], K[12:, 12:], rtol=1e-12, atol=1e-9)
    spread = (W - R).flatten(1).norm(dim=1)
    sd = (2 / w) ** 0.5 * spread[12:, None] * spread[None, :12]
    err = (Kc[12:, :12] - K[12:, :12]).abs()
    assert (err <= 4 * sd).all() and (err > 0).any(), (err / sd).max()
    assert (err / K[12:, :12].abs()).max() < 0.01  # the reference keeps the error to the spread, not the norm
    attrs = inc["w"].attrs["methods"]
    assert "count sketches of width 1024" in attrs["model"]
    # a rerun on the same models (other settings) reuses the cached Gram and sketches as they are
    run_group(paths, "full", 1, 0, str(tmp_path / "again.zarr"), cache_path=cache, **{**kw, "max_k": 3})
    again, _ = load_subspaces([str(tmp_path / "again.zarr")])
    np.testing.assert_array_equal(again["w"].array("gram_model"), inc["w"].array("gram_model"))


def test_count_sketch_is_row_block_invariant_and_unbiased():
    """The sketch of a matrix read in row blocks of any size equals the sketch of the whole;
    over seeds, ⟨z(X), z(Y)⟩ averages to ⟨X, Y⟩ and its spread stays below √(2/w)‖X‖‖Y‖."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(3, 37, 53, generator=g, dtype=torch.float64)
    w = 256
    whole = torch.zeros(3, w, dtype=torch.float64)
    hosvd.add_hashed_sketch(whole, X.reshape(3, -1), 0, seed=5)
    blocks = torch.zeros(3, w, dtype=torch.float64)
    for r0 in (0, 11, 12, 30):
        r1 = {0: 11, 11: 12, 12: 30, 30: 37}[r0]
        hosvd.add_hashed_sketch(blocks, X[:, r0:r1].reshape(3, -1), r0 * 53, seed=5)
    torch.testing.assert_close(blocks, whole, rtol=0, atol=1e-12)
    exact = float((X[0] * X[1]).sum())
    est = []
    for seed in range(200):
        Z = torch.zeros(3, w, dtype=torch.float64)
        hosvd.add_hashed_sketch(Z, X.reshape(3, -1), 0, seed)
        est.append(float(Z[0] @ Z[1]))
    bound = (2 / w) ** 0.5 * float(X[0].norm() * X[1].norm())
    assert abs(np.mean(est) - exact) < 4 * bound / np.sqrt(200)
    assert np.std(est) < bound
    with pytest.raises(ValueError, match="power of two"):
        hosvd.add_hashed_sketch(torch.zeros(1, 100, dtype=torch.float64), X[:1].reshape(1, -1), 0, 0)
