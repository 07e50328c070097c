r"""The merge stage: several models of a collection into one, evaluated on every merged task.

Protocol (KnOTS): the models' bodies are merged, heads are not; each task is scored with the
merged body and its own model's head, and reported as normalised accuracy = merged / the
task's own model. The head is what an adapter replaces outright (PEFT ``modules_to_save``), or
for full models the tensors named in ``merge.head`` (zoo MLPs: the last layer).

Task vectors are taken against a reference W_ref: the collection's base (adapters: the base
they adapt; full models: the base checkpoint when the collection has one), else the mean of
the merged models; the output says which. Methods: :mod:`weightspace.core.merging`. Every
method with a scale λ gets it picked from ``merge.lambdas`` by mean normalised accuracy on the
evaluator's validation split (where the evaluator has one; otherwise λ = 1 and the table says
``tuned_on: none``). Tensors outside the analysed targets (biases) are merged entry-wise by the
subspace methods' entry-wise counterparts (mean, TIES).

Diagnostics printed beside the table, which say whether the collection is a merging testbed at
all: the reference alone per task (should sit clearly below the models), a two-task sum
W_ref + τ_a + τ_b (should keep most of each task), and ‖τ_i‖/‖W_ref‖ over the merged tensors.
"""

from __future__ import annotations

import logging

import pandas as pd
import torch

from . import layers
from .core import merging
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


def merge_models(store_paths: list[str], subspaces: dict, view: str, evaluator, splits: dict[str, str],
                 settings: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(scores, diagnostics): one score row per (method, λ, task, split); diagnostics per task."""
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
    head = set(heads[0])
    if base is not None:
        ref, reference = {k: v.double() for k, v in base.items()}, "base"
    else:
        ref = {k: torch.stack([m[k] for m in models]).mean(0) for k in models[0]}
        reference = "mean of the merged models"
    body = [k for k in ref if k not in head and any(not torch.equal(m[k], ref[k]) for m in models)]
    taus = {k: [m[k] - ref[k] for m in models] for k in body}
    keys = [st.key for st in stores]
    tasks = [(c.get("weightspace_task") or {}).get("label", k) for c, k in zip(configs, keys)]
    log.info("merging %d models (%s) against the %s; %d merged tensors, head %s",
             len(keys), ", ".join(keys), reference, len(body), sorted(head))

    scorer = Scorer(evaluator, models, configs, heads)
    diag = diagnostics(scorer, ref, taus, tasks, keys)
    rows = []

    plain_mean = {}

    def record(method, lam, merged, tuned_on):
        if method == "mean":
            plain_mean.update(merged)
        gap = (max(float((merged[n] - plain_mean[n]).abs().max()) for n in merged)
               if method == "subspace_mean" else float("nan"))
        for split in scorer.splits:
            for i, acc in enumerate(scorer.scores(merged, split)):
                rows.append({"method": method, "lam": lam, "split": split, "model": keys[i], "task": tasks[i],
                             "accuracy": acc, "own": scorer.own[split][i], "normalised": acc / scorer.own[split][i],
                             "reference": reference, "tuned_on": tuned_on, "n_merged": len(keys),
                             "max_abs_diff_vs_mean": gap})

    names = {target_weight_name(view, n): n for n in subspaces}
    k, density = settings["k"], settings["density"]
    for method in merging.METHODS:
        lams = settings["lambdas"] if method in merging.TUNED and "validation" in scorer.splits else [1.0]
        tuned_on = "validation" if len(lams) > 1 else "none"
        for lam in lams:
            merged = {}
            for name in body:
                sub = subspaces.get(names.get(name, ""), None)
                if method == "subspace_mean" and sub is not None:
                    C = [coefficients(_target(view, m, ref, name), sub.mean, sub.U_row[:, :k], sub.U_col[:, :k])
                         for m in models]
                    merged[name] = _as_weight(view, merging.subspace_mean(C, sub.mean, sub.U_row, sub.U_col), ref, name)
                elif method == "subspace_ties" and sub is not None:
                    tau = merging.subspace_ties([t.reshape(sub.shape) for t in taus[name]], sub.U_row[:, :k],
                                                sub.U_col[:, :k], lam, density)
                    merged[name] = ref[name] + tau.reshape(ref[name].shape)
                else:
                    entry = {"subspace_mean": "mean", "subspace_ties": "ties"}.get(method, method)
                    merged[name] = ref[name] + merging.merge_entrywise(entry, taus[name], lam, density,
                                                                       seed=settings["seed"])
            record(method, lam, merged, tuned_on)
    scores = pd.DataFrame(rows)
    scores["selected"] = select(scores)
    return scores, diag


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

    def scores(self, merged: dict, split: str, ref: dict | None = None) -> list[float]:
        return [self._score(c, self.weights(merged, i, ref), split) for i, c in enumerate(self.configs)]


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


def summary(scores: pd.DataFrame) -> pd.DataFrame:
    """Per method (at its selected λ): mean and min normalised test accuracy over the tasks."""
    d = scores[(scores["split"] == "test") & scores["selected"]]
    out = (d.groupby("method", sort=False)
           .agg(lam=("lam", "first"), tuned_on=("tuned_on", "first"), normalised_mean=("normalised", "mean"),
                normalised_min=("normalised", "min"), accuracy_mean=("accuracy", "mean"), tasks=("task", "nunique"),
                reference=("reference", "first"))
           .reset_index())
    return out.sort_values("normalised_mean", ascending=False, kind="stable").reset_index(drop=True)


def mean_gap(scores: pd.DataFrame) -> float:
    """max |W_subspace_mean − W_mean| over the merged weights: ~1e-16 when the subspace mean is
    the plain mean (a centred basis fitted on exactly the merged models)."""
    return float(scores.loc[scores["method"] == "subspace_mean", "max_abs_diff_vs_mean"].max())
