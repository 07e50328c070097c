r"""The basis-size sweep: how the answer grows with the collection.

For each basis size N (a seeded draw of N of the basis models, nested: the draw for a smaller
N is a prefix of the one for a larger N, so curves do not jump between unrelated draws), the
decomposition is recomputed from those N models alone (``subspace.decompose_target``: the same
sums, eigendecomposition and sharing test as the subspace stage), and

- the fixed held-out models are projected at k (their error against ‖W‖ and against ‖W − μ‖,
  over every analysed matrix of the view together, with the mean-only error beside it:
  ‖W − μ_N‖/‖W‖ is what a larger basis must beat);
- the sharing statistic's excess over its rotation null (median over matrices) and the count
  of matrices called shared (p against draw + margin, BH at the FDR) are recorded.

If a shared subspace exists (the paper's convergence claim), held-out error falls with N and
levels off; for unrelated models it stays near the mean-only error.

At N = all basis models the draw is the subspace stage's own basis: its stored decomposition and
sharing test are used (``stage_result``) instead of being computed again, so the sweep's last
point is the verdict's, wherever the stage computed what the sweep would (every mode exact, the
same null draws and test K).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch

from . import layers
from .core import stats
from .core.lowrank import LowRank
from .project import coefficients, core_size, reconstruct
from .store import ModelStore
from .subspace import decompose_target

log = logging.getLogger("weightspace")


def nested_draw(keys: list[str], sizes: list[int], seed: int) -> dict[int, list[str]]:
    """For each size N ≤ len(keys), the first N of one seeded permutation of ``keys`` (sorted
    first, so the draw does not depend on the order given)."""
    order = np.random.default_rng(seed).permutation(sorted(keys))
    return {n: list(order[:n]) for n in sorted(set(sizes)) if 2 <= n <= len(keys)}


def stage_result(stage, keys: list[str], targets: list[layers.Target], null_draws: int, test_k: int) -> dict | None:
    """The subspace stage's decomposition (``subspace.load_subspaces``' pair) of exactly these
    models, target by target, where it is what ``decompose_target`` would give the sweep: every
    target stored with exact modes and a sharing test of ``null_draws`` draws at ``test_k``;
    else None."""
    if stage is None or sorted(stage[1]) != sorted(keys):
        return None
    recs = {t.name: stage[0].get(t.name) for t in targets}
    def test(r):
        return r.attrs.get("sharing") or {}

    ok = all(r is not None and not any(r.attrs.get("sketched", [1]))
             and test(r).get("max_draws", test(r).get("draws")) == null_draws and test(r).get("K") == test_k
             for r in recs.values())
    return recs if ok else None


def sweep(basis_paths: list[str], heldout_paths: list[str], view: str, sizes: list[int], *, k: int,
          seed: int, null_draws: int, test_k: int, fdr: float, margin: float, max_k: int,
          center: bool = True, device: str = "cpu", stage=None) -> pd.DataFrame:
    """One row per basis size N: held-out projected and mean-only errors at k, the median excess
    of the sharing statistic over its rotation null, matrices called shared (see the module).
    ``stage``: the subspace stage's (subspaces, models), used at N = all (``stage_result``)."""
    basis = {ModelStore(p).key: ModelStore(p) for p in basis_paths}
    held = [ModelStore(p) for p in heldout_paths]
    if not held:
        raise ValueError("the basis-size sweep needs held-out models (split.heldout_fraction > 0)")
    targets = layers.targets(next(iter(basis.values())), view)
    held_mats = {t.name: [layers.read_target(st, t).to(torch.float64) for st in held] for t in targets}
    held_mats = {n: [W.dense() if isinstance(W, LowRank) else W for W in Ws] for n, Ws in held_mats.items()}
    rows = []
    for n, keys in nested_draw(list(basis), sizes, seed).items():
        stores = [basis[key] for key in keys]
        err2 = mean2 = norm2 = cnorm2 = 0.0
        tests, max_draws = [], []
        stored = stage_result(stage, keys, targets, null_draws, test_k)
        if stored:
            log.info("basis size %d: the subspace stage's own decomposition and test (the same models)", n)
        for t in targets:
            if stored:
                sub = stored[t.name]
                tests.append((sub.attrs["sharing"]["statistic"], sub.array("null_rotation_statistic").mean(1)))
                max_draws.append(int(sub.attrs["sharing"].get("max_draws", null_draws)))
            else:
                sub, _ = decompose_target(stores, t, max_k=max_k, center=center, gaussian_null=False,
                                          rotation_null=True, seed=seed, device=device, null_draws=null_draws,
                                          test_k=test_k, exact_max_dim=1 << 30, sketch_when_cheaper=False)
                if sub.sharing:
                    tests.append((sub.sharing["statistic"], sub.nulls["rotation_statistic"].mean(1).numpy()))
                    max_draws.append(int(sub.sharing["max_draws"]))
            kr, kc = core_size(k, sub.U_row, sub.U_col)
            Ur, Uc, mu = sub.U_row[:, :kr].cpu(), sub.U_col[:, :kc].cpu(), sub.mean.cpu()
            for W in held_mats[t.name]:
                What = reconstruct(coefficients(W, mu, Ur, Uc), mu, Ur, Uc)
                err2 += float(((What - W) ** 2).sum())
                mean2 += float(((mu - W) ** 2).sum())
                norm2 += float((W ** 2).sum())
                cnorm2 += float(((W - mu) ** 2).sum())
        _, _, calls = stats.shared_calls([T for T, _ in tests], [d for _, d in tests], margin, fdr, max_draws)
        rows.append({"n_basis": n, "k": k, "heldout_models": len(held),
                     "heldout_error": (err2 / norm2) ** 0.5, "heldout_error_centered": (err2 / cnorm2) ** 0.5,
                     "heldout_mean_only_error": (mean2 / norm2) ** 0.5,
                     "median_excess": float(np.median([T - d.mean() for T, d in tests])) if tests else np.nan,
                     "matrices_shared": int(calls.sum()), "matrices_tested": len(tests)})
        log.info("basis size %d: held-out error %.4f (mean only %.4f), %d of %d matrices shared", n,
                 rows[-1]["heldout_error"], rows[-1]["heldout_mean_only_error"], rows[-1]["matrices_shared"],
                 len(tests))
    return pd.DataFrame(rows)
