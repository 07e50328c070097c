"""The collection lock and the baselines."""

import pandas as pd
import pytest
import torch

from weightspace import collection, project
from weightspace.core.hosvd import random_orthonormal


def rows(keys):
    return pd.DataFrame([{"key": k, "id": f"org/{k}", "source": "hub", "revision": "a" * 40,
                          "format": "full", "task": "", "path": ""} for k in keys])


def test_lock_appends_never_reorders_and_keeps_splits(tmp_path):
    lock = tmp_path / "collection.tsv"
    split = {"heldout_fraction": 0.3, "seed": 0}
    first = collection.update_lock(lock, rows([f"m{i:02d}" for i in range(20)]), split)
    mtime = lock.stat().st_mtime_ns
    again = collection.update_lock(lock, rows([f"m{i:02d}" for i in range(20)]), split)
    assert lock.stat().st_mtime_ns == mtime  # unchanged content: not rewritten
    pd.testing.assert_frame_equal(first, again)
    # new models (resolved in another order) are appended; earlier rows stay as they were
    grown = collection.update_lock(lock, rows(["new1"] + [f"m{i:02d}" for i in range(19, -1, -1)] + ["new2"]), split)
    assert list(grown["key"]) == list(first["key"]) + ["new1", "new2"]
    pd.testing.assert_frame_equal(grown.iloc[:20], first)
    assert 2 <= (first["split"] == "heldout").sum() <= 12


def test_explicit_heldout_list_and_too_few_basis(tmp_path):
    t = collection.update_lock(tmp_path / "a.tsv", rows(["a", "b", "c"]), {"heldout": ["b"]})
    assert list(t["split"]) == ["basis", "heldout", "basis"]
    with pytest.raises(ValueError, match="fewer than two basis models"):
        collection.update_lock(tmp_path / "b.tsv", rows(["a", "b"]), {"heldout": ["a"]})


def test_slugify_never_makes_paths():
    assert collection.slugify("mistralai/Mistral-7B") == "mistralai--Mistral-7B"
    for bad in ["../../etc/passwd", "/abs/x", "a/../b"]:
        assert "/" not in collection.slugify(bad) and ".." not in collection.slugify(bad)


def test_svd_baseline_stores_no_more_than_projection():
    for k in (1, 4, 16, 32):
        for m, n in ((128, 64), (10, 128), (768, 3072)):
            assert project.per_model_numbers("svd", k, m, n) <= project.per_model_numbers("projected", k, m, n)


def test_baselines_match_definitions():
    g = torch.Generator().manual_seed(0)
    W, mu = torch.randn(12, 9, generator=g, dtype=torch.float64), torch.randn(12, 9, generator=g, dtype=torch.float64)
    torch.testing.assert_close(project.baseline("mean", W, mu, 4), mu)
    r = project.svd_rank(8, 12, 9)
    assert r == 3
    approx = project.baseline("svd", W, mu, 8) - mu
    s = torch.linalg.svdvals(W - mu)
    # Eckart–Young: the error is the tail of the singular values
    assert float(torch.linalg.norm(W - mu - approx)) == pytest.approx(float(s[r:].norm()), rel=1e-10)
    assert torch.linalg.matrix_rank(approx) == r
    for X in (W - mu, (W - mu).T):  # from the smaller Gram (tall and wide) as from the SVD, every r
        svd = torch.linalg.svd(X, full_matrices=False)
        for rr in range(0, 10):
            torch.testing.assert_close(project.truncated_svd(X, rr, project.gram_factors(X)),
                                       project.truncated_svd(X, rr, svd), rtol=0, atol=1e-10)
    rnd = project.baseline("random", W, mu, 4, seed=1)
    assert torch.linalg.matrix_rank(rnd - mu) == 4
    torch.testing.assert_close(rnd, project.baseline("random", W, mu, 4, seed=1))
    # the random subspace is one per (target, k, seed), cached when small: the same frames either way
    m, n = W.shape
    cached = project.random_frames(m, n, 4, 1)
    assert project.random_frames(m, n, 4, 1) is cached
    fresh = project._draw_frames(m, n, 4, 1, torch.float64, "cpu")
    for a, b in zip(cached, fresh):
        assert torch.equal(a, b)
    torch.testing.assert_close(rnd, mu + cached[0] @ (cached[0].T @ (W - mu) @ cached[1]) @ cached[1].T)
    big = project.random_frames(project.FRAME_CACHE_NUMBERS, 1, 2, 0)  # too big to keep: drawn each time
    assert big[0].shape == (project.FRAME_CACHE_NUMBERS, 2) and project.random_frames(
        project.FRAME_CACHE_NUMBERS, 1, 2, 0)[0] is not big[0]
    Q = random_orthonormal(9, 4, torch.Generator().manual_seed(0))
    torch.testing.assert_close(Q.T @ Q, torch.eye(4, dtype=torch.float64))


def test_screen_rejects_other_architectures_and_strict_names_them():
    ok = {"status": "ok", "format": "full", "tensors": {"w": [[4, 3], "F32"], "b": [[4], "F32"]}}
    mans = {"a": dict(ok, id="org/a"), "b": dict(ok, id="org/b"), "c": dict(ok, id="org/c"),
            "odd": {"status": "ok", "format": "full", "id": "org/odd", "tensors": {"w": [[5, 3], "F32"]}},
            "gone": {"status": "rejected", "id": "org/gone", "reason": "org/gone: repository not found (404)"}}
    table = collection.screen(mans)
    status = dict(zip(table["key"], table["status"]))
    assert status == {"a": "accepted", "b": "accepted", "c": "accepted", "odd": "rejected", "gone": "rejected"}
    reason = table.set_index("key").loc["odd", "reason"]
    assert reason.startswith("org/odd: architecture differs from reference a") and "'b'" in reason
    with pytest.raises(collection.RejectedModels, match=r"2 model\(s\) rejected:\n  odd: org/odd.*\n  gone: org/gone"):
        collection.enforce_strict(table)
    collection.enforce_strict(table[table["status"] == "accepted"])  # nothing rejected: no error
    with pytest.raises(ValueError, match="reference model gone was not fetched"):
        collection.screen(mans, reference="gone")


def test_a_k_that_compresses_nothing_is_said(tmp_path, caplog):
    """k at a matrix's dimensions keeps a core as large as the matrix: the project stage says so,
    naming the matrix and the k."""
    import logging

    from weightspace.project import project_models
    from weightspace.store import write_store
    from weightspace.subspace import load_subspaces, run_group

    g = torch.Generator().manual_seed(0)
    paths = []
    for i in range(4):
        write_store(tmp_path / f"m{i}.zarr", {"a.weight": torch.randn(6, 4, generator=g),
                                              "b.weight": torch.randn(20, 30, generator=g)}.items(), {"model": f"m{i}"})
        paths.append(str(tmp_path / f"m{i}.zarr"))
    run_group(paths, "full", 1, 0, str(tmp_path / "g.zarr"), max_k=8, center=True, gaussian_null=False,
              rotation_null=False, seed=0, device="cpu")
    subs, _ = load_subspaces([str(tmp_path / "g.zarr")])
    with caplog.at_level(logging.WARNING, logger="weightspace"):
        project_models(paths, subs, "full", str(tmp_path / "c.zarr"), [2, 4, 8], {})
    assert "a.weight (6×4): at k = [8] the k×k core is as large as the matrix" in caplog.text  # 4×4 < 6×4
    assert "b.weight" not in caplog.text
