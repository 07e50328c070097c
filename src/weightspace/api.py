"""The library from Python (a notebook), without the workflow: fit the shared subspace of
in-memory models, project and reconstruct, serve them all from one bank, and open a finished
run's subspaces and banks.

>>> from weightspace.api import fit
>>> sub = fit({"a": sd_a, "b": sd_b, "c": sd_c}, max_k=8)      # name → state dict (or folders, Hub ids)
>>> sharing_test(models)                                        # the verdict table (DataFrame)
>>> sub.save("my-subspace"); sub = load("my-subspace")          # safetensors + JSON, no pickle
>>> lora_delta("adapter-folder")                                 # a PEFT LoRA as ΔW = scale·B A
>>> C = sub.project(sd_new, k=4)                                # k×k coefficients per matrix
>>> sd_hat = sub.reconstruct(C)                                  # matrices μ + U_r C U_cᵀ
>>> model.load_state_dict(sub.compress(sd_new, k=4))             # a whole state dict at k
>>> served = attach(sub.bank(models, k=4), skeleton)             # every model in one forward
>>> y = served(x, model_ids=["a", "c", "a"])                      # one model per row
>>> run = load_run("results", "digits-mlp-shared"); run.tables["metrics"]; plot_accuracy(run, "acc.png")

The decomposition is the workflow's own (:mod:`weightspace.core.hosvd`: float64 mode sums of the
stack, exact eigendecompositions): per weight matrix (every tensor of two or more dimensions,
a conv kernel as out × in·kh·kw) with μ the mean of the models and X_i = W_i − μ, U_row and
U_col are the leading eigenvectors of Σ X_i X_iᵀ and Σ X_iᵀ X_i, a model's coefficients are
C = U_row,kᵀ (W − μ) U_col,k and its reconstruction μ + U_row,k C U_col,kᵀ. Tensors of one
dimension (biases, norms) are not decomposed: ``reconstruct`` leaves them out unless given the
state dict they come from (``like``), and ``compress`` returns the whole state dict, every
tensor in its own dtype. Everything is held in memory: for hundreds of large models use the
workflow, which streams.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .bank import Bank, BankModel, Matrix, attach, load_bank  # noqa: F401  (the serving API)
from .core import hosvd, stats
from .project import coefficients, reconstruct


@dataclass
class Basis:
    """One matrix's subspace: mean μ (m×n), U_row (m×k_max), U_col (n×k_max), the tensor's own
    shape, and the centred row-mode spectrum (None when read from a run)."""

    mean: torch.Tensor
    U_row: torch.Tensor
    U_col: torch.Tensor
    shape: tuple[int, ...]
    eig_row: torch.Tensor | None = None
    total: float | None = None  # Σ_j λ_j of all eigenvalues (eig_row may hold only the leading ones)

    def explained_variance(self, k: int) -> float:
        """Σ_{j≤k} λ_j / Σ_j λ_j of the centred row mode."""
        if self.eig_row is None:
            raise ValueError("this basis holds no spectrum")
        ev = stats.explained_variance(self.eig_row, self.total)
        return float(ev[min(k, len(ev)) - 1])

    def __repr__(self) -> str:
        return (f"Basis({'×'.join(map(str, self.shape))}, {self.U_row.shape[1]} row and "
                f"{self.U_col.shape[1]} column directions)")


class Subspaces(dict):
    """name → :class:`Basis`, with projection and reconstruction of whole state dicts; a run's
    (``load_run``) also carries its ``tables``."""

    tables: dict = {}
    name: str = ""

    def project(self, state_dict: Mapping[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
        """C = U_row,kᵀ (W − μ) U_col,k for every matrix of the subspace (k limited by the
        stored directions)."""
        out = {}
        for name, b in self.items():
            if name not in state_dict:
                raise KeyError(f"the state dict has no tensor {name!r}")
            W = _matrix(state_dict[name], name, b.shape)
            out[name] = coefficients(W, b.mean, b.U_row[:, :k], b.U_col[:, :k])
        return out

    def bank(self, models: Mapping[str, Mapping[str, torch.Tensor]], k: int) -> Bank:
        """Every model of ``models`` (name → state dict) at k as one :class:`weightspace.bank.Bank`:
        the shared μ, U_row, U_col per matrix, each model's k×k coefficients and its other tensors
        (biases, norms) kept per model. ``attach(bank, skeleton)`` serves them in one forward."""
        names = list(models)
        if not names:
            raise ValueError("bank needs at least one model")
        mats = {}
        for name, b in self.items():
            kr, kc = min(k, b.U_row.shape[1]), min(k, b.U_col.shape[1])
            Ur, Uc = b.U_row[:, :kr], b.U_col[:, :kc]
            C = []
            for n in names:
                if name not in models[n]:
                    raise KeyError(f"model {n}: the state dict has no tensor {name!r}")
                C.append(coefficients(_matrix(models[n][name], f"{name} of model {n}", b.shape), b.mean, Ur, Uc))
            mats[name] = Matrix(name, tuple(b.shape), "weight", b.mean, Ur, Uc, torch.stack(C))
        others = [t for t in models[names[0]] if t not in self]
        kept = {}
        for t in others:
            missing = [n for n in names if t not in models[n]]
            if missing:
                raise KeyError(f"model {missing[0]}: no tensor {t!r} (model {names[0]} has one)")
            kept[t] = torch.stack([models[n][t].detach().to(torch.float64) for n in names])
        return Bank("full", k, names, mats, kept, configs=[{} for _ in names])

    def reconstruct(self, coeffs: Mapping[str, torch.Tensor],
                    like: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """μ + U_row C U_colᵀ for every matrix, in its tensor's shape (float64). With ``like``
        (the state dict the coefficients came from): a whole state dict, every tensor of ``like``
        in its own shape and dtype, the matrices replaced by their reconstructions."""
        out = {name: reconstruct(C.to(torch.float64), self[name].mean, self[name].U_row,
                                 self[name].U_col).reshape(self[name].shape) for name, C in coeffs.items()}
        if like is None:
            return out
        return {name: (out[name].reshape(t.shape).to(t.dtype) if name in out else t.detach().clone())
                for name, t in like.items()}

    def compress(self, state_dict: Mapping[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
        """The whole state dict at k: ``reconstruct(project(state_dict, k), like=state_dict)``,
        ready for ``model.load_state_dict``."""
        return self.reconstruct(self.project(state_dict, k), like=state_dict)

    def save(self, folder: str | os.PathLike) -> None:
        """``folder/subspaces.safetensors`` (every matrix's mean, U_row, U_col and spectrum) and
        ``folder/subspaces.json`` (shapes, totals): no pickle; ``load`` reads them back."""
        import json

        from .io import atomic_path, write_safetensors

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors, meta = {}, {}
        for name, b in self.items():
            for key in ("mean", "U_row", "U_col", "eig_row"):
                if getattr(b, key) is not None:
                    tensors[f"{name}::{key}"] = getattr(b, key).contiguous()
            meta[name] = {"shape": list(b.shape), "total": b.total}
        write_safetensors(tensors, folder / "subspaces.safetensors")
        with atomic_path(folder / "subspaces.json") as tmp:
            tmp.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")

    def __repr__(self) -> str:
        return f"Subspaces({len(self)} matrices: {', '.join(list(self)[:4])}{', …' if len(self) > 4 else ''})"


def load(folder: str | os.PathLike) -> Subspaces:
    """Subspaces saved by ``Subspaces.save`` (safetensors + JSON)."""
    import json

    from safetensors.torch import load_file

    folder = Path(folder)
    tensors = load_file(str(folder / "subspaces.safetensors"))
    meta = json.loads((folder / "subspaces.json").read_text())
    return Subspaces({name: Basis(tensors[f"{name}::mean"], tensors[f"{name}::U_row"], tensors[f"{name}::U_col"],
                                  tuple(m["shape"]), tensors.get(f"{name}::eig_row"), m["total"])
                      for name, m in meta.items()})


def _matrix(t: torch.Tensor, name: str, shape) -> torch.Tensor:
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"tensor {name}: shape {tuple(t.shape)}, the subspace's is {tuple(shape)}")
    return t.detach().reshape(t.shape[0], -1).to(torch.float64)


def load_models(sources, revision: str | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """name → state dict of model folders or Hugging Face Hub ids (safetensors only, never a
    pickle): a local folder's ``*.safetensors`` files, else the Hub repo's, downloaded into the
    Hugging Face cache (``huggingface_hub.snapshot_download``, safetensors and JSON only). A dict
    {name: folder or id} keeps its names; a list is named by the folders' names or the ids."""
    from safetensors.torch import load_file

    from . import layers

    named = dict(sources) if isinstance(sources, Mapping) else {Path(str(x)).name if Path(str(x)).is_dir() else str(x): x
                                                                  for x in sources}
    out = {}
    for name, src in named.items():
        folder = Path(str(src))
        if not folder.is_dir():
            from huggingface_hub import snapshot_download

            from .hub import ALLOW_PATTERNS

            folder = Path(snapshot_download(str(src), revision=revision, allow_patterns=ALLOW_PATTERNS))
        files = layers.weight_files(folder, name)
        out[name] = {k: v for f in files for k, v in load_file(str(f)).items()}
    return out


def _stacks(models, progress: str | None = None):
    """(tensor name, shape, the models' matrices in float64) for every tensor of ≥ 2 dimensions
    of the first model, checked present and of one shape in every model."""
    from tqdm import tqdm

    names = list(models)
    first = models[names[0]]
    todo = [(t, W0.shape) for t, W0 in first.items() if W0.ndim >= 2]
    for t, shape in tqdm(todo, desc=progress, unit="matrix", disable=progress is None or len(todo) < 8, leave=False):
        mats = []
        for n in names:
            if t not in models[n]:
                raise ValueError(f"model {n}: no tensor {t!r} (model {names[0]} has one)")
            mats.append(_matrix(models[n][t], f"{t} of model {n}", shape))
        yield t, tuple(shape), mats


def _decompose(mats: list[torch.Tensor], max_k: int, center: bool) -> hosvd.Subspace:
    sums = hosvd.ModeSums(*mats[0].shape)
    for W in mats:
        sums.add(W)
    flat = torch.stack([W.reshape(-1) for W in mats])
    return hosvd.decompose(sums, flat @ flat.T, max_k, center)


def fit(models, max_k: int = 16, center: bool = True) -> Subspaces:
    """The subspace of every weight matrix of ``models`` (name → state dict, all with the same
    matrices; or model folders / Hub ids, read by ``load_models``), exactly as the subspace stage
    computes it from stores. A progress bar shows for many matrices."""
    if not isinstance(models, Mapping) or any(not isinstance(v, Mapping) for v in models.values()):
        models = load_models(models)
    if len(models) < 2:
        raise ValueError(f"fit needs at least two models, got {len(models)}")
    out = Subspaces()
    for t, shape, mats in _stacks(models, "fit"):
        sub = _decompose(mats, max_k, center)
        out[t] = Basis(sub.mean, sub.U_row, sub.U_col, shape, sub.eig_row, float(sub.total))
    return out


def sharing_test(models, draws: int = 99, K: int = 16, margin: float = 0.05, fdr: float = 0.05,
                 share: float = 0.5, seed: int = 0):
    """The workflow's sharing test on in-memory models (or folders / Hub ids): per matrix the
    statistic T (mean over both modes of the area under the uncentred explained-variance curve
    up to K), its rotation null (``draws`` draws, stopped early as the stage does), z, p against
    draw + ``margin``, Benjamini–Hochberg q and the call; ``table.attrs["verdict"]`` says whether
    at least ``share`` of the matrices are called shared. The numbers are the stage's
    (``subspace.rotation_test``, ``core.stats``)."""
    import pandas as pd

    from .core import sharing
    from .subspace import rotation_test

    if not isinstance(models, Mapping) or any(not isinstance(v, Mapping) for v in models.values()):
        models = load_models(models)
    names, rows, nulls, max_draws = list(models), [], [], []
    for t, shape, mats in _stacks(models, "sharing test"):
        sub = _decompose(mats, K, True)
        S = sharing.padded([sharing.singular_values(W) for W in mats])
        res = rotation_test(S, names, sub, mats[0].shape, {"row": True, "col": True}, draws, K, seed, t)
        test, null = res["test"], res["nulls"]["rotation_statistic"].mean(1).numpy()
        nulls.append(null)
        max_draws.append(draws)
        rows.append({"target": t, "shape": "×".join(map(str, shape)), "statistic": test["statistic"],
                     "null_mean": float(null.mean()), "null_sd": float(null.std(ddof=1)),
                     "z": stats.z_score(test["statistic"], null), "draws": len(null),
                     "excess_row": test["mode_statistic"][0] - float(res["nulls"]["rotation_statistic"][:, 0].mean()),
                     "excess_col": test["mode_statistic"][1] - float(res["nulls"]["rotation_statistic"][:, 1].mean())})
    table = pd.DataFrame(rows)
    p, q, calls = stats.shared_calls(table["statistic"].to_numpy(float), nulls, margin, fdr, max_draws)
    table["p"], table["q"], table["shared"] = p, q, calls
    table.attrs["verdict"] = "shared" if calls.sum() >= share * len(calls) else "not shared"
    table.attrs["settings"] = {"draws": draws, "K": K, "margin": margin, "fdr": fdr, "share": share}
    return table[["target", "shape", "statistic", "null_mean", "null_sd", "z", "p", "q", "shared", "excess_row",
                  "excess_col", "draws"]]


def lora_delta(adapter, scale: float | None = None) -> dict[str, torch.Tensor]:
    """A PEFT LoRA adapter as the delta view sees it: {module: ΔW = scale · B A} (out × in),
    from an adapter folder (``adapter_model.safetensors`` + ``adapter_config.json``: scale =
    lora_alpha / r, or rsLoRA's lora_alpha / √r) or a state dict with ``scale`` given."""
    import json as _json

    from safetensors.torch import load_file

    if not isinstance(adapter, Mapping):
        folder = Path(adapter)
        cfg = _json.loads((folder / "adapter_config.json").read_text())
        r, alpha = cfg["r"], cfg.get("lora_alpha", cfg["r"])
        scale = alpha / (r ** 0.5 if cfg.get("use_rslora") else r) if scale is None else scale
        adapter = load_file(str(folder / "adapter_model.safetensors"))
    if scale is None:
        raise ValueError("lora_delta of a state dict needs scale (lora_alpha / r)")
    out = {}
    for name, A in adapter.items():
        if ".lora_A." in name:
            B = adapter[name.replace(".lora_A.", ".lora_B.")]
            out[name.split(".lora_A.")[0]] = scale * B.to(torch.float64) @ A.to(torch.float64)
    if not out:
        raise ValueError("no lora_A / lora_B pairs in the adapter")
    return out


TABLES = {"metrics": "evaluate/{view}/metrics.parquet", "compression": "evaluate/{view}/compression.csv",
          "sharing": "subspace/{view}/sharing.csv", "spectra": "subspace/{view}/spectra.parquet",
          "energy": "project/{view}/energy.parquet", "alignment": "align/{view}/alignment.parquet",
          "sweep": "sweep/{view}/basis_size.csv", "adapt": "adapt/{view}/summary.csv", "merge": "merge/{view}/summary.csv",
          "rejected": "rejected.tsv", "collection": "collection.tsv"}


def tables(results: str | os.PathLike, collection: str, view: str = "full") -> dict:
    """A finished run's tables of one collection and view as pandas DataFrames, by name (those
    the run made): metrics, compression, sharing, spectra, energy, alignment, sweep, adapt,
    merge, rejected, collection (``TABLES`` gives each file)."""
    import pandas as pd

    out = {}
    for name, rel in TABLES.items():
        path = Path(results) / collection / rel.format(view=view)
        if path.exists():
            out[name] = (pd.read_parquet(path) if path.suffix == ".parquet" else
                         pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",", keep_default_na=False,
                                     na_values=[""] if path.suffix == ".csv" else None))
    return out


def load_run(results: str | os.PathLike, collection: str, view: str = "full") -> Subspaces:
    """The subspaces of a finished run (``results/{collection}/subspace/{view}/group-*.zarr``),
    as :func:`fit` returns them, with matrix shapes (a conv kernel reconstructs as out ×
    in·kh·kw) and the centred row spectrum; ``.tables`` holds the run's tables as DataFrames
    (:func:`tables`), which the ``plot_*`` functions draw."""
    from .subspace import load_subspaces

    groups = sorted((Path(results) / collection / "subspace" / view).glob("group-*.zarr"))
    if not groups:
        raise FileNotFoundError(f"no subspace of {collection} ({view}) under {results}")
    records, _ = load_subspaces([str(g) for g in groups])
    run = Subspaces({name: Basis(r.mean, r.U_row, r.U_col, tuple(r.shape),
                                 torch.from_numpy(r.array("eig_row")).to(torch.float64), r.attrs.get("total"))
                     for name, r in records.items()})
    run.tables = tables(results, collection, view)
    run.name = f"{collection} [{view}]"
    return run


# One function per figure kind of the report, drawing a run's tables (``load_run(...).tables``)
# exactly as the workflow does (``weightspace.figures``), into a PNG at ``path``.
def plot_spectra(run: Subspaces, path: str | os.PathLike) -> None:
    """Explained variance of every matrix against its nulls (the report's spectra_vs_nulls)."""
    from . import figures

    figures.spectra_figure(run.tables["spectra"], getattr(run, "name", ""), str(path))


def plot_accuracy(run: Subspaces, path: str | os.PathLike) -> None:
    """Accuracy (or the evaluator's metric) against k, every method with its 95% interval."""
    from . import figures

    figures.accuracy_figure(run.tables["metrics"], getattr(run, "name", ""), str(path))


def plot_compression(run: Subspaces, path: str | os.PathLike) -> None:
    """The metric against bytes per model, every method (the report's *_vs_bytes)."""
    from . import figures

    figures.compression_figure(run.tables["metrics"], run.tables["compression"], getattr(run, "name", ""), str(path))


def plot_sweep(run: Subspaces, path: str | os.PathLike) -> None:
    """Held-out error and the sharing test against the number of basis models."""
    from . import figures

    figures.sweep_figure(run.tables["sweep"], getattr(run, "name", ""), str(path))
