r"""The merge stage: several models of a collection into one, evaluated on every merged task.

Protocol (KnOTS): the models' bodies are merged, heads are not; each task is scored with the
merged body and its own model's head, and reported as normalised accuracy = merged / the
task's own model. The head is what an adapter replaces outright (PEFT ``modules_to_save``), or
for full models the tensors named in ``merge.head`` (zoo MLPs: the last layer).

Merge sets: the candidates are one basis model per task (``merge.models`` names them instead);
``merge.sets`` random sets of each size in ``merge.set_sizes`` are drawn from them (seeded;
``0`` = all candidates, one set), so every method is compared on the same sets and the tables
give a mean ± 95% CI over sets, and the paired difference to task arithmetic per set.

Task vectors are taken against a reference W_ref: the collection's base (adapters: the base
they adapt; full models: the base checkpoint when the collection has one), else the mean of
the set's models; the output says which. Methods: :mod:`weightspace.core.merging` (PEFT's
merge utilities, the subspace methods, TSV-Merge, Iso-C, KnOTS). Every method with a scale λ
(α) gets it picked per set by mean normalised accuracy on the evaluator's validation split
(data no merged model trained on), from ``merge.lambdas`` widened until the optimum is inside
(:mod:`weightspace.core.search`); without a validation split λ = 1 and the table says
``tuned_on: none``. DARE draws its own mask per tensor and runs for every seed of
``merge.dare_seeds``. Tensors outside the analysed targets (biases) are merged by the subspace
and SVD methods' entry-wise counterparts (TIES for subspace TIES, the mean otherwise).

Diagnostics printed beside the table, which say whether the collection is a merging testbed at
all: the reference alone per task (should sit clearly below the models), a two-task sum
W_ref + τ_a + τ_b (should keep most of each task), and ‖τ_i‖/‖W_ref‖ over the merged tensors.
"""

from __future__ import annotations

import logging
import zlib

import numpy as np
import pandas as pd
import torch

from . import layers
from .core import merging
from .core.search import widened_grid_best
from .core.stats import ci95
from .assemble import base_name, effective_weights, model_config, module_weight_name
from .core.hosvd import dense
from .project import coefficients
from .store import ModelStore

log = logging.getLogger("weightspace")


def pick_models(stores: list[ModelStore], splits: dict[str, str], chosen: list[str] | None,
                max_models: int) -> list[ModelStore]:
    """The models to merge: ``chosen`` keys, else the first basis model of each task label,
    at most ``max_models``."""
    by_key = {s.key: s for s in stores}
    if chosen:
        missing = [k for k in chosen if k not in by_key]
        if missing:
            raise ValueError(f"merge.models names models not in the collection (or rejected): {missing}")
        return [by_key[k] for k in chosen]
    seen, out = set(), []
    for s in stores:
        task = (model_config(s).get("weightspace_task") or {}).get("label", s.key)
        if splits.get(s.key) == "basis" and task not in seen:
            seen.add(task)
            out.append(s)
    if len(out) < 2:
        raise ValueError(f"merge needs at least 2 models of different tasks among the basis models; found {len(out)}")
    return out[:max_models]


def default_head(config: dict) -> list[str]:
    """A zoo MLP's head: its last layer; other full models: none unless ``merge.head`` names it."""
    sizes = config.get("layer_sizes")
    return [f"fc{len(sizes) - 1}.weight", f"fc{len(sizes) - 1}.bias"] if sizes else []


def target_weight_name(view: str, target: str) -> str:
    return module_weight_name(target) if view == "delta" else target


def _norm(ws: dict[str, torch.Tensor]) -> float:
    return sum(float((w.double() ** 2).sum()) for w in ws.values()) ** 0.5


def load_candidates(store_paths: list[str], view: str, evaluator, splits: dict[str, str], settings: dict):
    """The candidates' weights (as a forward pass uses them), configs, heads and keys."""
    if view == "factors":
        raise ValueError("merge works on the delta view of adapters (ΔW), not on their factors")
    stores = pick_models([ModelStore(p) for p in store_paths], splits, settings.get("models"),
                         settings["max_models"])
    base = evaluator.base_weights()
    adapters = view == "delta"
    if adapters and base is None:
        raise ValueError("merging adapters needs their base model")
    models, configs, heads = [], [], []
    for st in stores:
        cfg = model_config(st)
        tmap = {t.name: t for t in layers.targets(st, view)}
        mats = {n: dense(layers.read_target(st, t)) for n, t in tmap.items()}
        models.append({k: v.double() for k, v in effective_weights(view, st, mats, base).items()})
        configs.append(cfg)
        heads.append(sorted(base_name(n) for n in layers.kept_tensors(st, view)) if adapters
                     else list(settings.get("head") or default_head(cfg)))
    return models, configs, heads, [st.key for st in stores], base


def merge_sets(n: int, sizes: list[int], count: int, seed: int) -> list[tuple[int, ...]]:
    """Merge sets of candidate indices: ``count`` distinct random sets of each size (all sets of
    that size when there are fewer), drawn with ``seed``; size 0 or ≥ n is the one set of all."""
    import itertools
    import math

    rng = np.random.default_rng(seed)
    out = []
    for size in sizes:
        if size == 0 or size >= n:
            out.append(tuple(range(n)))
            continue
        if math.comb(n, size) <= count:
            out += list(itertools.combinations(range(n), size))
            continue
        seen = set()
        while len(seen) < count:
            seen.add(tuple(sorted(rng.choice(n, size, replace=False).tolist())))
        out += sorted(seen)
    return list(dict.fromkeys(out))


def dare(taus: list[torch.Tensor], name: str, seed: int, density: float, lam: float = 1.0) -> torch.Tensor:
    """DARE-TIES of one tensor with its own mask: the seed is mixed with the tensor's name, so
    tensors of one shape (two layers) draw different masks."""
    return merging.merge_entrywise("dare_ties", taus, lam, density, seed=seed * 1_000_003 + zlib.crc32(name.encode()))


def unit_merges(view: str, subspaces: dict, ref: dict, models: list[dict], taus: dict, settings: dict):
    """{(method, seed): merged task vectors at λ = 1} for every method (the methods are linear in
    λ given their masks; the subspace mean is the mean of the models, untuned)."""
    names = {target_weight_name(view, n): n for n in subspaces}
    k, density = settings["k"], settings["density"]
    out = {}
    for method in merging.METHODS:
        seeds = settings["dare_seeds"] if method == "dare_ties" else [None]
        for seed in seeds:
            tau = {}
            for name, ts in taus.items():
                sub = subspaces.get(names.get(name, ""), None)
                matrix = ts[0].ndim == 2
                if method == "subspace_mean" and sub is not None:
                    C = [coefficients(_target(view, m, ref, name), sub.mean, sub.U_row[:, :k], sub.U_col[:, :k])
                         for m in models]
                    tau[name] = _as_weight(view, merging.subspace_mean(C, sub.mean, sub.U_row, sub.U_col),
                                           ref, name) - ref[name]
                elif method == "subspace_ties" and sub is not None:
                    tau[name] = merging.subspace_ties([t.reshape(sub.shape) for t in ts], sub.U_row[:, :k],
                                                      sub.U_col[:, :k], 1.0, density).reshape(ref[name].shape)
                elif method == "tsv" and matrix:
                    tau[name] = merging.tsv(ts)
                elif method == "iso_c" and matrix:
                    tau[name] = merging.iso_c(ts)
                elif method == "knots_ties" and matrix:
                    tau[name] = merging.knots(ts, "ties", 1.0, density)
                elif method == "dare_ties":
                    tau[name] = dare(ts, name, seed, density)
                else:
                    entry = {"subspace_mean": "mean", "subspace_ties": "ties"}.get(method, method)
                    entry = "mean" if method in merging.SVD else entry
                    tau[name] = merging.merge_entrywise(entry, ts, 1.0, density)
            out[method, seed] = tau
    return out


def merge_models(store_paths: list[str], subspaces: dict, view: str, evaluator, splits: dict[str, str],
                 settings: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(scores, diagnostics): score rows per (merge set, method, DARE seed, λ tried, split, task)
    — validation for every λ tried, test and validation at the selected one (``selected``) —
    and the testbed diagnostics over all candidates (see the module docstring)."""
    models, configs, heads, keys, base = load_candidates(store_paths, view, evaluator, splits, settings)
    tasks = [(c.get("weightspace_task") or {}).get("label", k) for c, k in zip(configs, keys)]
    head = set(heads[0])
    scorer = Scorer(evaluator, models, configs, heads)

    def reference(members):
        if base is not None:
            return {k: v.double() for k, v in base.items()}, "base"
        return ({k: torch.stack([models[i][k] for i in members]).mean(0) for k in models[0]},
                "mean of the merged models")

    ref_all, _ = reference(range(len(models)))
    body_all = [k for k in ref_all if k not in head and any(not torch.equal(m[k], ref_all[k]) for m in models)]
    diag = diagnostics(scorer, ref_all, {k: [m[k] - ref_all[k] for m in models] for k in body_all}, tasks, keys)
    sets = merge_sets(len(models), settings["set_sizes"], settings["sets"], settings["seed"])
    log.info("merging %d candidates (%s) in %d sets of sizes %s; head %s", len(keys), ", ".join(keys), len(sets),
             sorted({len(s) for s in sets}), sorted(head))
    tuned = "validation" in scorer.splits
    rows = []
    for set_id, members in enumerate(sets):
        ref, ref_name = reference(members)
        sub_models = [models[i] for i in members]
        body = [k for k in ref if k not in head and any(not torch.equal(m[k], ref[k]) for m in sub_models)]
        taus = {k: [m[k] - ref[k] for m in sub_models] for k in body}
        units = unit_merges(view, subspaces, ref, sub_models, taus, settings)
        plain_mean = units["mean", None]
        for (method, seed), unit in units.items():
            gap = (max(float((unit[n] - plain_mean[n]).abs().max()) for n in unit)
                   if method == "subspace_mean" else float("nan"))
            merged_at = lambda lam: {n: ref[n] + lam * t for n, t in unit.items()}  # noqa: E731
            scored = {}

            def trial(lam, split="validation"):
                scored[lam, split] = scorer.scores(merged_at(lam), split, ref, members)

            if tuned and method in merging.TUNED:
                val = {}

                def tune(lam):
                    trial(lam)
                    val[lam] = float(np.mean([a / scorer.own["validation"][i]
                                              for a, i in zip(scored[lam, "validation"], members)]))

                lam, edge = widened_grid_best(tune, val, settings["lambdas"], extend=settings["lambda_extend"])
                tuned_on = "validation"
            else:
                lam, edge, tuned_on = 1.0, False, "none"
                if tuned:
                    trial(1.0)
            trial(lam, "test")
            for (l_, split), accs in scored.items():
                for i, acc in zip(members, accs):
                    own = scorer.own[split][i]
                    rows.append({"set": set_id, "set_size": len(members), "method": method,
                                 "seed": -1 if seed is None else seed, "lam": l_, "split": split, "model": keys[i],
                                 "task": tasks[i], "accuracy": acc, "own": own, "normalised": acc / own,
                                 "reference": ref_name, "tuned_on": tuned_on, "lam_at_edge": edge,
                                 "selected": l_ == lam, "max_abs_diff_vs_mean": gap})
        log.info("set %d/%d (%s): merged and scored", set_id + 1, len(sets), ", ".join(keys[i] for i in members))
    return pd.DataFrame(rows), diag


def _target(view, model, ref, name):
    """The analysed matrix of a merged model: ΔW (delta view) or W (full view)."""
    W = model[name] - ref[name] if view == "delta" else model[name]
    return W.reshape(W.shape[0], -1)


def _as_weight(view, M, ref, name):
    return (ref[name] + M if view == "delta" else M).reshape(ref[name].shape)


def select(scores: pd.DataFrame) -> pd.Series:
    """Per method, the rows of the λ with the best mean normalised validation accuracy (all
    rows of an untuned method)."""
    val = scores[scores["split"] == "validation"]
    best = {}
    for method, d in val.groupby("method"):
        by_lam = d.groupby("lam")["normalised"].mean()
        best[method] = by_lam.idxmax()
    return scores.apply(lambda r: best.get(r["method"], r["lam"]) == r["lam"], axis=1)


class Scorer:
    """Scores merged bodies with each task's own head, on test (and validation when the
    evaluator has it); also each model's own accuracy, the normaliser."""

    def __init__(self, evaluator, models, configs, heads):
        self.evaluator, self.models, self.configs, self.heads = evaluator, models, configs, heads
        self.has_val = bool(getattr(evaluator, "has_validation", False))
        self.splits = ["validation", "test"] if self.has_val else ["test"]
        self.own = {s: [self._score(c, m, s) for c, m in zip(configs, models)] for s in self.splits}

    def _score(self, config, weights, split):
        kw = {"split": split} if self.has_val else {}
        return float(self.evaluator.score(config, weights, **kw)["accuracy"])

    def weights(self, merged: dict, i: int, ref: dict | None = None) -> dict:
        """Model i's weights with the merged body: its own tensors where nothing was merged
        (its head), the merged ones elsewhere."""
        out = dict(ref if ref is not None else self.models[i])
        out.update(merged)
        out.update({h: self.models[i][h] for h in self.heads[i]})
        return out

    def scores(self, merged: dict, split: str, ref: dict | None = None, members=None) -> list[float]:
        """The merged body's accuracy on each member's task (all models by default), with its head."""
        members = range(len(self.configs)) if members is None else members
        return [self._score(self.configs[i], self.weights(merged, i, ref), split) for i in members]


def diagnostics(scorer: Scorer, ref: dict, taus: dict, tasks: list[str], keys: list[str]) -> pd.DataFrame:
    """Per merged model: own and reference-alone test accuracy, the two-task sum with the next
    model's task vector (normalised, on this task), and ‖τ‖/‖W_ref‖ over the merged tensors."""
    body_ref = {k: ref[k] for k in taus}
    ref_alone = scorer.scores(body_ref, "test", ref)
    N, rows = len(keys), []
    for i in range(N):
        j = (i + 1) % N
        pair = {k: ref[k] + t[i] + t[j] for k, t in taus.items()}
        acc = scorer._score(scorer.configs[i], scorer.weights(pair, i), "test")
        own = scorer.own["test"][i]
        rows.append({"model": keys[i], "task": tasks[i], "own": own, "reference_alone": ref_alone[i] / own,
                     "pair_sum": acc / own, "pair_with": tasks[j],
                     "tau_over_ref": _norm({k: t[i] for k, t in taus.items()}) / _norm(body_ref)})
    return pd.DataFrame(rows)


def testbed_verdict(diag: pd.DataFrame) -> tuple[bool, str]:
    """Whether the collection can tell merging methods apart: the reference alone clearly below
    the models (normalised < 0.9 on average), a two-task sum keeping most of each task (> 0.8),
    task vectors small against the weights (median ‖τ‖/‖W‖ < 0.5)."""
    base, pair, tau = diag["reference_alone"].mean(), diag["pair_sum"].mean(), diag["tau_over_ref"].median()
    checks = [(base < 0.9, f"reference alone keeps {base:.2f} of the models' accuracy (want < 0.9)"),
              (pair > 0.8, f"a two-task sum keeps {pair:.2f} (want > 0.8)"),
              (tau < 0.5, f"median ‖τ‖/‖W_ref‖ = {tau:.2f} (want < 0.5)")]
    ok = all(passed for passed, _ in checks)
    return ok, "; ".join(msg for _, msg in checks) + ("" if ok else " → NOT an informative merging testbed")


def set_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """Per (set, method): normalised test accuracy at the selected λ, averaged over the set's
    tasks (and DARE's seeds), its worst task, and the λ chosen."""
    d = scores[(scores["split"] == "test") & scores["selected"]]
    per_seed = d.groupby(["set", "set_size", "method", "seed"], as_index=False, sort=False).agg(
        normalised=("normalised", "mean"), worst=("normalised", "min"), accuracy=("accuracy", "mean"),
        lam=("lam", "first"), lam_at_edge=("lam_at_edge", "first"), tuned_on=("tuned_on", "first"),
        reference=("reference", "first"), tasks=("task", "nunique"))
    return per_seed.groupby(["set", "set_size", "method"], as_index=False, sort=False).agg(
        normalised=("normalised", "mean"), worst=("worst", "mean"), accuracy=("accuracy", "mean"),
        lam=("lam", "median"), lam_at_edge=("lam_at_edge", "any"), tuned_on=("tuned_on", "first"),
        reference=("reference", "first"), tasks=("tasks", "first"), seeds=("seed", "nunique"))


def summary(scores: pd.DataFrame, baseline: str = "task_arithmetic") -> pd.DataFrame:
    """Per set size and method: normalised test accuracy (merged / own model, mean over the set's
    tasks) as mean ± 95% CI over the merge sets, the mean worst task, and the paired difference
    to ``baseline`` on the same sets (mean ± CI, sets won / lost); the median λ chosen."""
    per = set_scores(scores)
    rows = []
    for size, d in per.groupby("set_size", sort=True):
        base = d[d["method"] == baseline].set_index("set")["normalised"]
        for method, m in d.groupby("method", sort=False):
            own = m.set_index("set")["normalised"]
            diff = (own - base.reindex(own.index)).dropna()
            rows.append({"set_size": size, "method": method, "sets": len(m), "tasks": int(m["tasks"].iloc[0]),
                         "normalised_mean": own.mean(), "ci95": ci95(own), "normalised_min": m["worst"].mean(),
                         f"minus_{baseline}": diff.mean(), "diff_ci95": ci95(diff), "wins": int((diff > 0).sum()),
                         "losses": int((diff < 0).sum()), "lam": m["lam"].median(), "lam_at_edge": bool(m["lam_at_edge"].any()),
                         "tuned_on": m["tuned_on"].iloc[0], "reference": m["reference"].iloc[0],
                         "seeds": int(m["seeds"].max())})
    out = pd.DataFrame(rows)
    return out.sort_values(["set_size", "normalised_mean"], ascending=[True, False], kind="stable").reset_index(drop=True)


def mean_gap(scores: pd.DataFrame) -> float:
    """max |W_subspace_mean − W_mean| over the merged weights of the set of all candidates: ~1e-16
    when the subspace mean is the plain mean (a centred basis fitted on exactly those models)."""
    d = scores[(scores["method"] == "subspace_mean") & (scores["set_size"] == scores["set_size"].max())]
    return float(d["max_abs_diff_vs_mean"].max())
