r"""The adapt stage: learn tasks the basis never saw, training only coefficients in the subspace.

For every new task (zoo: ``rotate``/``shift`` input transforms drawn with ``adapt.seed``, a seed
the zoo never uses, and never a task label of the collection), every training-set size in
``adapt.sizes`` and every method below, the same data, steps and seeds; each method's learning
rate is picked from ``adapt.lrs`` by validation accuracy (seed 0), then ``adapt.seeds`` seeds
run at that rate. A seed draws the training examples (sizes below the pool), the minibatch
order and any random initialisation.

Methods (W_0 = the start: ``base`` = the collection's base model, ``mean`` = base + μ for
adapters, μ for full models; analysed matrices are the view's targets):

- ``coef-<start>``  W = W_0 + U_row,k C U_colᵀ per analysed matrix, only C (k×k) trained
  (:class:`weightspace.core.coefficients.CoefficientDelta`);
- ``random``        the same from ``base`` in a random orthonormal basis of the same k (a new
  draw per seed): the control that says whether the learned basis matters;
- ``tinylora``, ``fourierft``  PEFT's small-budget tuners at k² trainable numbers per analysed
  matrix (TinyLoRA ``u = k²``, FourierFT ``n_frequency = k²``), ``vera`` (rank ``vera_rank``);
- ``lora``          PEFT LoRA at ``lora_rank``; ``full``: every weight; ``head``: the last layer;
- ``none-base``, ``none-mean``  no training.

PEFT's tuners wrap :class:`weightspace.zoo.MLP` through ``get_peft_model``; nothing of them is
re-implemented. The coefficient model of each task (start ``base``, the largest k and size,
seed 0) is exported as a PEFT LoRA of rank k (B = U_row C, A = U_colᵀ, ``lora_alpha = r``) and as
a coefficients file (``coefficients.safetensors``: C per target).
"""

from __future__ import annotations

import logging
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import zoo
from .core.coefficients import CoefficientDelta, lora_factors
from .evaluate import _module_weight_name
from .hosvd import random_orthonormal

log = logging.getLogger("weightspace")
PEFT_METHODS = ("tinylora", "fourierft", "vera", "lora")
K_METHODS = ("coef-base", "coef-mean", "random", "tinylora", "fourierft")  # run at every k


def new_tasks(families: list[str], n: int, seed: int, taken: set[str]) -> list[dict]:
    """``n`` tasks cycling through ``families``, drawn with ``seed``; never a label in ``taken``."""
    rng, out = np.random.default_rng(seed), []
    labels = set(taken)
    while len(out) < n:
        task = zoo.make_task(families[len(out) % len(families)], rng)
        if task["label"] not in labels:
            labels.add(task["label"])
            out.append(task)
    return out


def weight_name(view: str, target: str) -> str:
    """The base model's tensor an analysed target changes (``fc1.weight``)."""
    return _module_weight_name(target) if view == "delta" else target


class Adapted(torch.nn.Module):
    """A zoo MLP whose analysed matrices are W_0 + ΔW(C) (coefficients only), or whose listed
    tensors are trainable copies (``head``, ``full``); everything else frozen at W_0."""

    def __init__(self, start: dict[str, torch.Tensor], deltas: dict[str, CoefficientDelta] | None = None,
                 trainable: list[str] = ()):
        super().__init__()
        self.start = {k: v.float() for k, v in start.items()}
        self.deltas = torch.nn.ModuleDict({k.replace(".", "__"): d for k, d in (deltas or {}).items()})
        self.free = torch.nn.ParameterDict({k.replace(".", "__"): torch.nn.Parameter(self.start[k].clone())
                                            for k in trainable})
        self.n_layers = sum(1 for k in start if k.endswith(".weight"))

    def weights(self) -> dict[str, torch.Tensor]:
        w = dict(self.start)
        for k, d in self.deltas.items():
            name = k.replace("__", ".")
            w[name] = w[name] + d()
        w.update({k.replace("__", "."): p for k, p in self.free.items()})
        return w

    def forward(self, x):
        return zoo.mlp_forward(self.weights(), x, self.n_layers)


def peft_model(method: str, start: dict, modules: list[str], k: int, settings: dict, seed: int):
    """PEFT's own tuner on the zoo MLP (only its parameters trainable)."""
    import peft

    torch.manual_seed(seed)
    model = zoo.MLP.from_weights(start)
    if method == "lora":
        cfg = peft.LoraConfig(r=settings["lora_rank"], lora_alpha=settings["lora_rank"], target_modules=modules)
    elif method == "vera":
        cfg = peft.VeraConfig(r=settings["vera_rank"], target_modules=modules, projection_prng_key=seed)
    elif method == "tinylora":
        cfg = peft.TinyLoraConfig(u=k * k, target_modules=modules, projection_seed=seed)
    elif method == "fourierft":
        cfg = peft.FourierFTConfig(n_frequency=k * k, target_modules=modules, random_loc_seed=seed)
    else:
        raise ValueError(f"unknown PEFT method {method!r}")
    return peft.get_peft_model(model, cfg)


def build(method: str, k: int, seed: int, starts: dict, subspaces: dict, view: str, settings: dict):
    """The model of one method at k (a module whose trainable parameters are the method's)."""
    targets = sorted(subspaces)
    if method.startswith("coef-") or method == "random":
        start = starts["base" if method == "random" else method.removeprefix("coef-")]
        deltas = {}
        for t in targets:
            sub = subspaces[t]
            if method == "random":
                g = torch.Generator().manual_seed(seed * 7919 + zlib.crc32(t.encode()) + k)
                U_r = random_orthonormal(sub.shape[0], min(k, sub.shape[0]), g)
                U_c = random_orthonormal(sub.shape[1], min(k, sub.shape[1]), g)
            else:
                U_r, U_c = sub.U_row[:, :k], sub.U_col[:, :k]
            deltas[weight_name(view, t)] = CoefficientDelta(U_r, U_c)
        return Adapted(start, deltas)
    start = starts["base"] if "base" in starts else starts["mean"]
    if method == "full":
        return Adapted(start, trainable=list(start))
    if method == "head":
        L = sum(1 for n in start if n.endswith(".weight"))
        return Adapted(start, trainable=[f"fc{L}.weight", f"fc{L}.bias"])
    modules = sorted({weight_name(view, t).removesuffix(".weight") for t in targets})
    return peft_model(method, start, modules, k, settings, seed)


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def train(model, x, y, lr: float, steps: int, batch_size: int, seed: int) -> None:
    """Adam on the model's trainable parameters, minibatches drawn with ``seed``."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(y), (min(batch_size, len(y)),), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def method_list(settings: dict, starts: dict) -> list[tuple[str, int]]:
    """(method, k) pairs to run: the k-methods at every k, the others once (k = 0)."""
    out = []
    for m in settings["methods"]:
        if m.startswith("coef-") and m.removeprefix("coef-") not in starts:
            continue
        if m == "none-mean" and "mean" not in starts or m == "none-base" and "base" not in starts:
            continue
        out += [(m, k) for k in settings["ks"]] if m in K_METHODS else [(m, 0)]
    return out


def run_adapt(subspaces: dict, view: str, starts: dict, settings: dict, data: zoo.Digits,
              taken: set[str], export_dir: str | None = None):
    """(results, sweep): one row per (task, size, method, k, seed) with test/validation accuracy,
    trainable numbers and seconds; the learning-rate sweep's rows. Exports the coefficient
    models under ``export_dir`` (see the module docstring)."""
    tasks = new_tasks(settings["tasks"], settings["n_tasks"], settings["seed"], taken)
    pool_x, pool_y, val_x, val_y = zoo.validation_split(data)
    rows, sweep = [], []
    k_export = max(settings["ks"])
    for task in tasks:
        xs, ys = zoo.task_inputs_targets(task, pool_x, pool_y)
        xv, yv = zoo.task_inputs_targets(task, val_x, val_y)
        xt, yt = zoo.task_inputs_targets(task, data.x_test, data.y_test)
        sizes = [min(s, len(ys)) if s else len(ys) for s in settings["sizes"]]
        for size in sorted(set(sizes)):
            def subset(seed):
                idx = torch.randperm(len(ys), generator=torch.Generator().manual_seed(seed))[:size]
                return xs[idx], ys[idx]

            for method, k in method_list(settings, starts):
                base_row = {"task": task["label"], "family": task["family"], "n_train": size, "method": method,
                            "k": k}
                if method.startswith("none-"):
                    model = Adapted(starts[method.removeprefix("none-")])
                    for seed in range(settings["seeds"]):
                        rows.append({**base_row, "seed": seed, "lr": np.nan, "trainable": 0, "seconds": 0.0,
                                     "val_accuracy": accuracy(model, xv, yv), "accuracy": accuracy(model, xt, yt)})
                    continue
                runs = {}
                for lr in settings["lrs"]:
                    model, secs = _fit(method, k, 0, lr, subset, starts, subspaces, view, settings)
                    runs[lr] = (model, secs)
                    sweep.append({**base_row, "lr": lr, "val_accuracy": accuracy(model, xv, yv)})
                scores = {r["lr"]: r["val_accuracy"] for r in sweep[-len(settings["lrs"]):]}
                lr = max(settings["lrs"], key=lambda v: (scores[v], -v))  # ties: the smaller rate
                for seed in range(settings["seeds"]):
                    model, secs = runs[lr] if seed == 0 else _fit(method, k, seed, lr, subset, starts, subspaces,
                                                                  view, settings)
                    rows.append({**base_row, "seed": seed, "lr": lr, "trainable": trainable(model), "seconds": secs,
                                 "val_accuracy": accuracy(model, xv, yv), "accuracy": accuracy(model, xt, yt)})
                    if export_dir and seed == 0 and size == max(sizes) and k == k_export and method == "coef-base":
                        export_coefficients(Path(export_dir) / task["label"], model, view, settings["base_path"],
                                            task)
            log.info("task %s, %d examples: done", task["label"], size)
    return pd.DataFrame(rows), pd.DataFrame(sweep)


def _fit(method, k, seed, lr, subset, starts, subspaces, view, settings):
    t0 = time.perf_counter()
    model = build(method, k, seed, starts, subspaces, view, settings)
    x, y = subset(seed)
    train(model, x, y, lr, settings["steps"], settings["batch_size"], seed)
    return model, time.perf_counter() - t0


def export_coefficients(out_dir: Path, model: Adapted, view: str, base_path: str, task: dict) -> None:
    """A coefficient model as a PEFT LoRA (``lora/``) and a coefficients file."""
    from safetensors.torch import save_file

    from .export import write_peft_adapter
    from .io import atomic_path

    modules, coeffs = {}, {}
    for key, d in model.deltas.items():
        name = key.replace("__", ".")
        C = d.C.detach().double()
        modules[name.removesuffix(".weight")] = lora_factors(C, d.U_row.double(), d.U_col.double())
        coeffs[name] = C.float().contiguous()
    out_dir.mkdir(parents=True, exist_ok=True)
    write_peft_adapter(out_dir / "lora", modules, base_path)
    with atomic_path(out_dir / "coefficients.safetensors") as tmp:
        save_file(coeffs, str(tmp), metadata={"start": "base", "view": view, "task": task["label"]})


def summary(results: pd.DataFrame) -> pd.DataFrame:
    """Mean test accuracy over tasks per (size, method, k), with the spread over seeds (the std
    of the task-averaged accuracy across seeds) and the trainable numbers."""
    per_seed = results.groupby(["n_train", "method", "k", "seed"], as_index=False).agg(
        accuracy=("accuracy", "mean"), trainable=("trainable", "mean"), seconds=("seconds", "mean"))
    return (per_seed.groupby(["n_train", "method", "k"], as_index=False, sort=False)
            .agg(accuracy=("accuracy", "mean"), seed_std=("accuracy", "std"), trainable=("trainable", "mean"),
                 seconds=("seconds", "mean"), seeds=("seed", "nunique")))


def start_points(subspaces: dict, view: str, base: dict | None, mean_model: dict | None = None) -> dict:
    """The starts: ``base`` (the collection's base, if any) and ``mean``: base + μ on every
    analysed matrix for adapters; for full models μ on the analysed matrices and, for the other
    tensors, the base's (or ``mean_model``'s: the basis models' mean, when there is no base)."""
    out = {}
    if base is not None:
        out["base"] = {k: v.float() for k, v in base.items()}
    ref = out.get("base") or {k: v.float() for k, v in (mean_model or {}).items()}
    if not ref:
        raise ValueError("adapt needs the collection's base model or the basis models' mean")
    mean = dict(ref)
    for t, sub in subspaces.items():
        name = weight_name(view, t)
        mu = sub.mean.float().reshape(ref[name].shape)
        mean[name] = ref[name] + mu if view == "delta" else mu
    out["mean"] = mean
    return out


def mean_weights(store_paths: list[str]) -> dict[str, torch.Tensor]:
    """The mean of every tensor over the given model stores (the start of full collections
    without a base model)."""
    from .store import ModelStore

    stores = [ModelStore(p) for p in store_paths]
    return {n: torch.stack([s.read(n).double() for s in stores]).mean(0) for n in stores[0].names()}
