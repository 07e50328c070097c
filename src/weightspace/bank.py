r"""The model bank: a whole collection served from one basis, N models in one batched forward.

After the subspace stage every model of a view is, per analysed matrix, W_i ≈ R + U_r C_i U_cᵀ:
R is the mean μ (full view) or the base weight plus the mean update μ_ΔW (adapters' delta
view), U_r and U_c are shared, C_i is k_r×k_c. A bank holds R (μ; the base is added when the
bank is attached to it), U_r, U_c once per matrix and per model only C_i, the tensors the view
keeps as they are (full models: biases and norms; adapters: PEFT ``modules_to_save`` heads, under
the base's names) and, for the factors view, each LoRA module's scale s_i (the factors view is
served as W_base + s_i·B̂_i Â_i, two bank products in a chain: Â_i = μ_A + U C_{A,i} Uᵀ, likewise B̂_i).

Attached to a model skeleton (:func:`attach`: the zoo MLP, a transformers model; the base model
for adapters), each Linear whose weight the bank holds becomes a :class:`BankLinear`
(:func:`weightspace.core.bank.bank_linear`: y = x Rᵀ + ((x U_c) C_{m(row)}ᵀ) U_rᵀ + b_{m(row)}), an
Embedding a :class:`BankEmbedding`, a LayerNorm or a head with per-model tensors gathers them per
row, and any other module with per-model parameters runs once per distinct model of the batch
with that model's parameters (:class:`PerModelModule`). Rows select their model like PEFT's
``adapter_names=``:

>>> bank = load_bank("results/digits-lora/bank/delta/k16")
>>> served = attach(bank, MLP.from_folder("results/digits-lora/zoo/base"))
>>> logits = served(x, model_ids=["model-003", "model-017", ...])   # one id per row
>>> with served.select(ids):                                         # or as a context
...     logits = served.model(x)

Files (``write_bank``): ``bank.safetensors`` with ``mean/{t}``, ``U_row/{t}``, ``U_col/{t}``,
``coef/{t}`` (N×k_r×k_c) per target t, ``kept/{name}`` (N×…) and ``scale/{module}`` (N), and
``index.json``: the models in row order, view, k, per target the parameter it serves and its
shape, each model's config (its task, its architecture). Only safetensors are read.

Adding a model appends its C_i (``Bank.append``, projecting its matrices onto the basis): the
basis is not rebuilt.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from . import layers
from .assemble import base_name, model_config, module_weight_name
from .core.bank import bank_linear, gather_core, plan_rows, row_ids
from .core.hosvd import dense
from .io import atomic_path, relative_base, write_safetensors

FORMAT = 1
BANK_FILE, INDEX_FILE = "bank.safetensors", "index.json"


class BankError(ValueError):
    """A bank that cannot serve what it is asked: a model outside it, a skeleton it does not
    fit, a file missing a tensor."""


@dataclass
class Matrix:
    """One analysed matrix of the bank: the parameter it serves (checkpoint name ``weight``, its
    tensor ``shape``), its ``role`` (``weight``: W_i = μ + U_r C_i U_cᵀ; ``delta``: W_base + that;
    ``lora_A`` / ``lora_B``: a LoRA factor of module ``module``, served through the chain), the
    shared μ (m×n), U_row (m×k_r), U_col (n×k_c) and the cores C (N×k_r×k_c)."""

    weight: str
    shape: tuple[int, ...]
    role: str
    mean: torch.Tensor
    U_row: torch.Tensor
    U_col: torch.Tensor
    coef: torch.Tensor
    module: str = ""

    def dense(self, i: int) -> torch.Tensor:
        """μ + U_r C_i U_cᵀ (m×n) of model row i."""
        return self.mean + self.U_row @ self.coef[i] @ self.U_col.T

    def project(self, W: torch.Tensor) -> torch.Tensor:
        """C = U_rᵀ (W − μ) U_c of a matrix (m×n) on this basis."""
        return self.U_row.T @ (W.to(self.mean) - self.mean) @ self.U_col


@dataclass
class Bank:
    """Every model of one view at one k (module docstring). ``models``: keys in row order;
    ``matrices``: target → :class:`Matrix`; ``kept``: parameter (checkpoint name) → N×shape;
    ``scales``: LoRA module → N (factors view); ``configs``: one config per model."""

    view: str
    k: int
    models: list[str]
    matrices: dict[str, Matrix]
    kept: dict[str, torch.Tensor] = field(default_factory=dict)
    scales: dict[str, torch.Tensor] = field(default_factory=dict)
    configs: list[dict] = field(default_factory=list)
    base: str = ""

    def __len__(self) -> int:
        return len(self.models)

    def __repr__(self) -> str:
        return (f"Bank(view={self.view!r}, k={self.k}, {len(self)} models, {len(self.matrices)} matrices, "
                f"{len(self.kept)} per-model tensors, {self.nbytes() / 2**20:.1f} MiB)")

    @property
    def adapters(self) -> bool:
        return self.view in ("factors", "delta")

    def row(self, model) -> int:
        """The row of a model given by key or index (a clear error for one outside the bank)."""
        if isinstance(model, str):
            try:
                return self.models.index(model)
            except ValueError:
                shown = ", ".join(self.models[:5]) + (", …" if len(self) > 5 else "")
                raise BankError(f"model {model!r} is not in the bank ({len(self)} models: {shown})") from None
        i = int(model)
        if not 0 <= i < len(self):
            raise BankError(f"model index {i} is outside the bank ({len(self)} models: 0..{len(self) - 1})")
        return i

    def rows(self, model_ids) -> torch.Tensor | int:
        """Model rows for a batch: one key or index (an int: the whole batch one model), or one
        per row (a long tensor; an int again when every row names the same model)."""
        if isinstance(model_ids, (str, int)):
            return self.row(model_ids)
        if isinstance(model_ids, torch.Tensor):
            ids = model_ids.reshape(-1).long()
            bad = (ids < 0) | (ids >= len(self))
            if bool(bad.any()):
                self.row(int(ids[bad][0]))
        else:
            ids = torch.tensor([self.row(m) for m in model_ids], dtype=torch.long)
        if len(ids) and bool((ids == ids[0]).all()):
            return int(ids[0])
        return ids

    def to(self, dtype=None, device=None) -> Bank:
        """The bank with every tensor moved (floating tensors cast to ``dtype``)."""
        def mv(t):
            return t.to(device=device, dtype=dtype if dtype is not None and t.is_floating_point() else t.dtype)
        mats = {n: replace(m, mean=mv(m.mean), U_row=mv(m.U_row), U_col=mv(m.U_col), coef=mv(m.coef))
                for n, m in self.matrices.items()}
        return replace(self, matrices=mats, kept={n: mv(t) for n, t in self.kept.items()},
                       scales={n: mv(t) for n, t in self.scales.items()}, models=list(self.models),
                       configs=list(self.configs))

    def at(self, k: int) -> Bank:
        """The bank at a smaller k: the leading k_r, k_c directions and cores (factors are nested)."""
        mats = {}
        for n, m in self.matrices.items():
            kr, kc = min(k, m.U_row.shape[1]), min(k, m.U_col.shape[1])
            mats[n] = replace(m, U_row=m.U_row[:, :kr], U_col=m.U_col[:, :kc], coef=m.coef[:, :kr, :kc])
        return replace(self, k=k, matrices=mats, models=list(self.models), configs=list(self.configs),
                       kept=dict(self.kept), scales=dict(self.scales))

    def nbytes(self) -> int:
        """Bytes of every tensor the bank holds."""
        ts = [t for m in self.matrices.values() for t in (m.mean, m.U_row, m.U_col, m.coef)]
        ts += list(self.kept.values()) + list(self.scales.values())
        return sum(t.numel() * t.element_size() for t in ts)

    # ------------------------------------------------------------------ per model
    def weights(self, model, base: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """One model's parameters as the bank serves them (checkpoint names): the full view's
        μ + U_r C U_cᵀ per matrix and its kept tensors; adapters: ``base`` with W_base + ΔŴ per
        module and the kept tensors replaced (the per-model path the bank must equal)."""
        i = self.row(model)
        if self.adapters and base is None:
            raise BankError("a bank of adapters is served inside its base: give the base's weights")
        out = dict(base or {})
        for name, t in self.kept.items():
            out[name] = t[i]
        done = set()
        for m in self.matrices.values():
            if m.role == "weight":
                out[m.weight] = m.dense(i).reshape(m.shape)
            elif m.role == "delta":
                out[m.weight] = out[m.weight].to(m.mean) + m.dense(i).reshape(m.shape)
            elif m.module not in done:
                done.add(m.module)
                A, B = self.lora_pair(m.module)
                dW = self.scales[m.module][i] * (B.dense(i) @ A.dense(i))
                out[m.weight] = out[m.weight].to(dW) + dW.reshape(m.shape)
        return out

    def lora_pair(self, module: str) -> tuple[Matrix, Matrix]:
        """The (A, B) matrices of a LoRA module (factors view)."""
        found = {m.role: m for m in self.matrices.values() if m.module == module and m.role.startswith("lora")}
        if set(found) != {"lora_A", "lora_B"}:
            raise BankError(f"module {module}: the bank lacks its lora_A or lora_B matrix")
        return found["lora_A"], found["lora_B"]

    def append(self, key: str, matrices: Mapping[str, torch.Tensor], kept: Mapping[str, torch.Tensor] | None = None,
               scales: Mapping[str, float] | None = None, config: dict | None = None) -> int:
        """Add a model: its matrices (target → m×n: the full model's matrix, the adapter's ΔW,
        or a LoRA factor) are projected onto the bank's basis, C = U_rᵀ (W − μ) U_c, and appended
        with its kept tensors; nothing shared is recomputed. Returns its row."""
        if key in self.models:
            raise BankError(f"model {key!r} is already in the bank")
        kept = dict(kept or {})
        missing = sorted(set(self.matrices) - set(matrices)) + sorted(set(self.kept) - set(kept))
        if missing or (self.scales and set(self.scales) - set(scales or {})):
            raise BankError(f"model {key}: missing {missing or sorted(set(self.scales) - set(scales or {}))}")
        coefs = {}
        for name, m in self.matrices.items():
            W = dense(matrices[name]) if not isinstance(matrices[name], torch.Tensor) else matrices[name]
            W = layers.as_matrix(W)
            if tuple(W.shape) != (m.mean.shape[0], m.mean.shape[1]):
                raise BankError(f"model {key}: matrix {name} is {tuple(W.shape)}, the bank's {tuple(m.mean.shape)}")
            coefs[name] = m.project(W)
        for name, t in kept.items():
            if name not in self.kept or tuple(t.shape) != tuple(self.kept[name].shape[1:]):
                raise BankError(f"model {key}: kept tensor {name} does not fit the bank")
        for name, C in coefs.items():
            m = self.matrices[name]
            m.coef = torch.cat([m.coef, C.to(m.coef)[None]])
        for name, t in kept.items():
            self.kept[name] = torch.cat([self.kept[name], t.to(self.kept[name])[None]])
        for name, s in (scales or {}).items():
            self.scales[name] = torch.cat([self.scales[name], torch.tensor([float(s)]).to(self.scales[name])])
        self.models.append(key)
        self.configs.append(dict(config or {}))
        return len(self) - 1

    # ------------------------------------------------------------------ files
    def save(self, folder: str | os.PathLike) -> None:
        """``folder/bank.safetensors`` + ``folder/index.json``, written atomically (module docstring)."""

        tensors, targets = {}, {}
        for name, m in self.matrices.items():
            for part in ("mean", "U_row", "U_col", "coef"):
                tensors[f"{part}/{name}"] = getattr(m, part).contiguous()
            targets[name] = {"weight": m.weight, "shape": list(m.shape), "role": m.role, "module": m.module}
        tensors.update({f"kept/{n}": t.contiguous() for n, t in self.kept.items()})
        tensors.update({f"scale/{n}": t.contiguous() for n, t in self.scales.items()})
        index = {"format": FORMAT, "view": self.view, "k": self.k, "models": self.models, "targets": targets,
                 "kept": sorted(self.kept), "scales": sorted(self.scales), "configs": self.configs,
                 "base": relative_base(self.base, folder) if self.base else ""}
        with atomic_path(folder) as tmp:
            tmp.mkdir(parents=True)
            write_safetensors(dict(sorted(tensors.items())), tmp / BANK_FILE, metadata={"format": "pt"})
            (tmp / INDEX_FILE).write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")


def load_bank(folder: str | os.PathLike, device="cpu") -> Bank:
    """A bank written by ``Bank.save`` (the bank rule's ``results/{c}/bank/{view}/k{k}``):
    safetensors and JSON only; a missing file or tensor is an error naming it."""
    from safetensors import safe_open

    folder = Path(folder)
    if folder.name == BANK_FILE:
        folder = folder.parent
    for f in (BANK_FILE, INDEX_FILE):
        if not (folder / f).is_file():
            raise FileNotFoundError(f"bank {folder}: no {f} (a bank folder holds {BANK_FILE} and {INDEX_FILE})")
    index = json.loads((folder / INDEX_FILE).read_text())
    if index.get("format") != FORMAT:
        raise BankError(f"bank {folder}: format {index.get('format')!r}, this weightspace reads {FORMAT}")
    N = len(index["models"])
    with safe_open(str(folder / BANK_FILE), framework="pt", device=str(device)) as f:
        have = set(f.keys())

        def get(name, what):
            if name not in have:
                raise BankError(f"bank {folder}: {BANK_FILE} lacks the tensor {name!r} ({what})")
            return f.get_tensor(name)

        matrices = {}
        for name, t in index["targets"].items():
            parts = {p: get(f"{p}/{name}", f"matrix {name}") for p in ("mean", "U_row", "U_col", "coef")}
            if parts["coef"].shape[0] != N:
                raise BankError(f"bank {folder}: coef/{name} has {parts['coef'].shape[0]} rows for {N} models")
            matrices[name] = Matrix(t["weight"], tuple(t["shape"]), t["role"], module=t.get("module", ""), **parts)
        kept = {n: get(f"kept/{n}", "a per-model tensor") for n in index["kept"]}
        scales = {n: get(f"scale/{n}", "a LoRA scale") for n in index["scales"]}
    base = index.get("base") or ""
    if base and not Path(base).is_absolute() and (folder / base).exists():
        base = str((folder / base).resolve())
    return Bank(index["view"], index["k"], list(index["models"]), matrices, kept, scales,
                list(index.get("configs") or [{}] * N), base)


# ----------------------------------------------------------------------------- building one
def build_bank(stores: Sequence, subspaces: Mapping, coefs: Mapping[str, torch.Tensor], view: str, k: int,
               dtype=torch.float32, base: str = "") -> Bank:
    """The bank of ``stores`` (ModelStores, in row order) at k: ``subspaces`` (target → record
    with mean, U_row, U_col, sources, shape), ``coefs`` (target → N×k_max×k_max, rows as
    ``stores``). Every model must keep the same tensors (same names and shapes)."""
    from .project import core_size

    if not stores:
        raise BankError("a bank needs at least one model")
    first = stores[0]
    kept_names = layers.kept_tensors(first, view)
    lora = layers.lora_pairs(first.names()) if view == "factors" else {}
    roles = {t: (mod, role) for mod, ab in lora.items() for t, role in zip(ab, ("lora_A", "lora_B"))}
    matrices = {}
    for name, sub in subspaces.items():
        kr, kc = core_size(k, sub.U_row, sub.U_col)
        C = torch.as_tensor(coefs[name])[:, :kr, :kc]
        if C.shape[0] != len(stores):
            raise BankError(f"matrix {name}: {C.shape[0]} coefficient rows for {len(stores)} models")
        if view == "full":
            weight, shape, role, module = name, tuple(first.shape(name)), "weight", ""
        elif view == "delta":
            weight, role, module = module_weight_name(name), "delta", name
            shape = tuple(sub.shape)
        else:
            module, role = roles[name]
            weight = module_weight_name(module)
            a, b = lora[module]
            shape = (first.shape(b)[0], first.shape(a)[1])
        matrices[name] = Matrix(weight, shape, role, sub.mean.to(dtype), sub.U_row[:, :kr].to(dtype),
                                sub.U_col[:, :kc].to(dtype), C.to(dtype), module)
    kept = {n: [] for n in kept_names}
    scales = {m.module: [] for m in matrices.values() if m.role == "lora_A"}
    configs = []
    for st in stores:
        mine = layers.kept_tensors(st, view)
        if mine != kept_names:
            raise BankError(f"model {st.key}: keeps {mine}, the first model ({first.key}) {kept_names}")
        for n in kept_names:
            t = st.read(n)
            if kept[n] and t.shape != kept[n][0].shape:
                raise BankError(f"model {st.key}: tensor {n} is {tuple(t.shape)}, the first model's "
                                f"{tuple(kept[n][0].shape)}")
            kept[n].append(t.to(dtype))
        cfg = model_config(st)
        for module in scales:
            scales[module].append(layers.lora_scale(cfg, module))
        configs.append(cfg)
    renamed = {(base_name(n) if view != "full" else n): torch.stack(ts) for n, ts in kept.items()}
    return Bank(view, k, [st.key for st in stores], matrices, renamed,
                {m: torch.tensor(s, dtype=dtype) for m, s in scales.items()}, configs, base)


def read_coefficients(coeff_path: str, keys: Sequence[str], names: Sequence[str]) -> dict[str, torch.Tensor]:
    """The project stage's coefficients (k_max×k_max per model) of ``keys``, in that order."""
    import numpy as np
    import zarr

    root = zarr.open_group(str(coeff_path), mode="r")
    index = {key: i for i, key in enumerate(root.attrs["models"])}
    missing = [k for k in keys if k not in index]
    if missing:
        raise BankError(f"models {missing} have no coefficients in {coeff_path}")
    rows = [index[k] for k in keys]
    return {n: torch.from_numpy(np.asarray(root[n][...])[rows]).double() for n in names}


def write_bank(store_paths: Sequence[str], subspaces: Mapping, coeff_path: str, view: str, k: int,
               out_dir: str | os.PathLike, base: str = ""):
    """The bank rule: build the bank of a view at k from the run's stores, subspace and
    coefficients, save it to ``out_dir`` (float32), and return it with its serving table
    (``serving_table``)."""
    from .assemble import original_bytes
    from .io import folder_bytes
    from .store import ModelStore

    stores = [ModelStore(p) for p in store_paths]
    coefs = read_coefficients(coeff_path, [s.key for s in stores], list(subspaces))
    bank = build_bank(stores, subspaces, coefs, view, k, torch.float32, base)
    bank.save(out_dir)
    rank = (model_config(stores[0]).get("r") if bank.adapters else None)
    table = serving_table(bank, original_bytes(stores[0], view), folder_bytes(base) if bank.adapters and base else 0,
                          rank)
    return bank, table


SERVING_NS = (1, 10, 100, 1000)


def serving_table(bank: Bank, original_bytes: int, base_bytes: int = 0, adapter_rank: int | None = None,
                  ns: Sequence[int] = SERVING_NS):
    """What serving N models of this bank's shapes costs, from the shapes alone (deterministic):
    tensor bytes held and multiply-adds per input vector through the served matrices, for

    - ``bank``: the skeleton (the base, adapters) + U_r, U_c (+ μ, full view; adapters fold μ
      into the base weight) + N · (k_r·k_c per matrix + the kept tensors), in the bank's dtype;
      per row Σ m·n + n·k_c + k_r·k_c + m·k_r (``core.bank.bank_flops``);
    - ``dense copies``: N whole models (adapters: N merged base models), m·n per row;
    - ``PEFT adapters`` (adapters only): the base + N original adapters (rank r), m·n + r·(m+n)
      per row, a loop over the distinct adapters of a batch on top.

    N runs over ``ns`` and the collection's own size."""
    import pandas as pd

    from .core.bank import bank_flops

    item = next(iter(bank.matrices.values())).coef.element_size() if bank.matrices else 4
    shared = per_model = dense_ops = bank_ops = peft_ops = 0
    done = set()
    for m in bank.matrices.values():
        rows, cols = m.mean.shape
        kr, kc = m.coef.shape[1:]
        shared += (kr * rows + kc * cols + (rows * cols if m.role == "weight" else 0)) * item
        per_model += kr * kc * item
        bank_ops += bank_flops(rows, cols, kr, kc)["bank"]
        full = m.shape[0] * int(torch.tensor(m.shape[1:]).prod())
        if m.role.startswith("lora"):
            if m.module not in done:
                done.add(m.module)
                bank_ops += full
                dense_ops += full
                peft_ops += full + (adapter_rank or 0) * (m.shape[0] + full // m.shape[0])
        else:
            dense_ops += full
            peft_ops += full + (adapter_rank or 0) * (rows + cols)
    per_model += sum(t[0].numel() * t.element_size() for t in bank.kept.values())
    per_model += sum(t.element_size() for t in bank.scales.values())
    one = base_bytes if bank.adapters else original_bytes
    out = []
    for N in sorted({*ns, len(bank)}):
        out.append({"N": N, "method": f"bank, k={bank.k}", "bytes": base_bytes + shared + N * per_model,
                    "multiply_adds_per_row": bank_ops})
        out.append({"N": N, "method": "dense copies", "bytes": N * one, "multiply_adds_per_row": dense_ops})
        if bank.adapters:
            out.append({"N": N, "method": f"PEFT adapters, r={adapter_rank}", "bytes": base_bytes + N * original_bytes,
                        "multiply_adds_per_row": peft_ops})
    t = pd.DataFrame(out)
    t["bytes_vs_one_model"] = t["bytes"] / one if one else float("nan")
    t["in_collection"] = t["N"] <= len(bank)
    return t


# ----------------------------------------------------------------------------- serving
def interleave(counts: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(model, row) of every row of every model, round-robin over the models (row 0 of each
    model, then row 1, …): consecutive rows belong to different models, so every batch cut from
    the order mixes as many models as it can hold."""
    counts_t = torch.as_tensor(list(counts), dtype=torch.long)
    models = torch.repeat_interleave(torch.arange(len(counts_t)), counts_t)
    starts = torch.cumsum(counts_t, 0) - counts_t
    rows = torch.arange(len(models)) - starts[models]
    order = torch.argsort(rows * len(counts_t) + models)
    return models[order], rows[order]


class Selection:
    """The rows' models of the batch being served, shared by every bank module of a model."""

    def __init__(self, bank: Bank):
        self.bank = bank
        self.stack: list = []
        ref = next((t for m in bank.matrices.values() for t in (m.mean,)), None)
        ref = ref if ref is not None else next((t for t in bank.kept.values() if t.is_floating_point()), None)
        self.dtype = ref.dtype if ref is not None else torch.get_default_dtype()
        self.device = ref.device if ref is not None else torch.device("cpu")

    @contextlib.contextmanager
    def use(self, rows):
        """Serve ``rows`` (an int, or a B-vector of model rows) inside the block."""
        self.stack.append(rows if isinstance(rows, int) else plan_rows(rows, len(self.bank)))
        try:
            yield
        finally:
            self.stack.pop()

    def rows(self, batch: int, module: str):
        """The current rows (an int or a B-vector), checked against the batch's size."""
        if not self.stack:
            raise BankError(f"module {module}: no models selected (call the served model with model_ids=…, "
                            "or inside served.select(ids))")
        rows = self.stack[-1]
        if not isinstance(rows, int) and len(row_ids(rows)) != batch:
            raise BankError(f"module {module}: the batch has {batch} rows but {len(row_ids(rows))} model ids "
                            "were given")
        return rows


def _per_row(t: torch.Tensor, rows, ndim: int, tail: int = 1) -> torch.Tensor:
    """A per-model tensor (N×…) for each row: t[i] for one model, else t[rows] shaped to
    broadcast against a B×…×(last ``tail`` dims) activation of ``ndim`` dimensions."""
    g = t[row_ids(rows)]
    if isinstance(rows, int):
        return g
    return g.reshape(g.shape[0], *([1] * (ndim - 1 - tail)), *g.shape[1:])


def _stand_in(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``module`` whose own tensors are empty meta tensors of the same shapes and
    dtypes (attributes such as ``in_features`` or ``weight.dtype`` still read; no memory held)."""
    import copy

    clone = copy.copy(module)
    clone._parameters = {n: None if p is None else torch.nn.Parameter(torch.empty_like(p, device="meta"),
                                                                      requires_grad=False)
                         for n, p in module._parameters.items()}
    clone._buffers = {n: None if b is None else torch.empty_like(b, device="meta") for n, b in module._buffers.items()}
    clone._modules = dict(module._modules)
    return clone


class _BankModule(torch.nn.Module):
    """A module serving every model of a bank: reads the selected rows and the per-model
    tensors from the shared :class:`Selection` (so that an appended model is served at once)."""

    def __init__(self, name: str, selection: Selection, replaced: torch.nn.Module | None = None):
        super().__init__()
        self.name = name
        object.__setattr__(self, "selection", selection)  # shared, not a submodule
        object.__setattr__(self, "_replaced", _stand_in(replaced) if replaced is not None else None)
        # an empty parameter of the bank's dtype and device: code that asks a model for its
        # device or dtype (transformers' model.device) finds one even when every weight is served
        self.anchor = torch.nn.Parameter(torch.empty(0, dtype=selection.dtype, device=selection.device),
                                         requires_grad=False)

    @property
    def bank(self) -> Bank:
        return self.selection.bank

    def _hold(self, name: str, value) -> None:
        """A tensor the module uses: a per-model kept tensor (``value`` its name in the bank, read
        at every forward, so an appended model is served) or one shared by all (a buffer, or None)."""
        setattr(self, f"{name}_key", value if isinstance(value, str) else None)
        self.register_buffer(f"shared_{name}", value if isinstance(value, torch.Tensor) else None)

    def _basis(self, target: str, R: torch.Tensor) -> None:
        """The shared tensors of a bank matrix this module serves: R, U_row, U_col."""
        m = self.bank.matrices[target]
        self.target = target
        self.register_buffer("R", R)
        self.register_buffer("U_row", m.U_row.contiguous())
        self.register_buffer("U_col", m.U_col.contiguous())

    def _value(self, name: str) -> torch.Tensor | None:
        """That tensor: N×… when per model, else the shared one (or None)."""
        key = getattr(self, f"{name}_key")
        return self.bank.kept[key] if key else getattr(self, f"shared_{name}")

    def extra_repr(self) -> str:
        return f"{self.name!r}, {len(self.bank)} models"

    def __getattr__(self, name):
        """Attributes the model's own code reads from the module it replaced (``in_features``,
        ``weight.dtype``, a child module): taken from that module, kept as ``replaced`` (its
        parameters are not the served ones: a BankLinear's ``weight`` is the shared R)."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            replaced = self.__dict__.get("_replaced")
            if replaced is None or name.startswith("_"):
                raise
            return getattr(replaced, name)


class BankLinear(_BankModule):
    """A Linear serving every model of a bank: y = x Rᵀ + ((x U_c) C_{m(row)}ᵀ) U_rᵀ + b_{m(row)}
    (``core.bank.bank_linear``), R = μ (full view: the bank's own tensor, not a copy) or
    W_base + μ (delta view). ``bias``: the name of a per-model kept bias, a shared bias tensor,
    or None."""

    def __init__(self, name, selection, target: str, R, bias=None, replaced=None):
        super().__init__(name, selection, replaced)
        self._basis(target, R)
        self._hold("bias", bias)

    def forward(self, x):
        rows = self.selection.rows(x.shape[0], self.name)
        bias = self._value("bias")
        return bank_linear(x, rows, self.R, self.U_row, self.U_col, self.bank.matrices[self.target].coef, bias)


class BankLoRALinear(_BankModule):
    """The factors view: y = x W_baseᵀ + b + s_{m(row)} · B̂_{m(row)} (Â_{m(row)} x), each factor
    a bank product (Â = μ_A + U C_A Uᵀ, B̂ likewise)."""

    def __init__(self, name, selection, module: str, W_base, bias=None, replaced=None):
        super().__init__(name, selection, replaced)
        self.module = module
        self.register_buffer("W_base", W_base)
        self._hold("bias", bias)
        self.targets = {m.role: name for name, m in self.bank.matrices.items() if m.module == module}

    def forward(self, x):
        rows = self.selection.rows(x.shape[0], self.name)
        A, B = (self.bank.matrices[self.targets[r]] for r in ("lora_A", "lora_B"))
        bias = self._value("bias")
        y = F.linear(x, self.W_base, bias if bias is not None and bias.ndim == 1 else None)
        h = bank_linear(x, rows, A.mean, A.U_row, A.U_col, A.coef)
        d = bank_linear(h, rows, B.mean, B.U_row, B.U_col, B.coef)
        y = y + _per_row(self.bank.scales[self.module], rows, y.ndim, tail=0) * d
        return y + _per_row(bias, rows, y.ndim) if bias is not None and bias.ndim == 2 else y


class BankEmbedding(_BankModule):
    """An Embedding serving every model: E_{m(row)}[t] = R[t] + (U_r[t] C_{m(row)}) U_cᵀ."""

    def __init__(self, name, selection, target: str, R, replaced=None):
        super().__init__(name, selection, replaced)
        self._basis(target, R)

    def forward(self, tokens):
        current = self.selection.stack[-1] if self.selection.stack else None
        if tokens.shape[0] == 1 and current is not None and not isinstance(current, int):
            # one row of indices for the whole batch (BERT's position_ids and token_type_ids
            # buffers): each row looks them up in its own model's table
            tokens = tokens.expand(len(row_ids(current)), *tokens.shape[1:])
        rows = self.selection.rows(tokens.shape[0], self.name)
        C = self.bank.matrices[self.target].coef.transpose(1, 2)   # C_iᵀ: k_c × k_r, so z C_iᵀᵀ = z C_i
        z = gather_core(F.embedding(tokens, self.U_row), C, rows)
        return F.embedding(tokens, self.R) + z @ self.U_col.T


# a per-row gather of dense per-model weights above this many numbers runs per distinct model
GATHER_LIMIT = 1 << 24


class PerRowLinear(_BankModule):
    """A Linear whose weight and/or bias is a per-model tensor kept as it is (an adapter's head):
    y_b = x_b W_{m(b)}ᵀ + b_{m(b)}, by a gather of the rows' weights (or once per distinct model
    when that gather would exceed GATHER_LIMIT numbers)."""

    def __init__(self, name, selection, weight, bias, replaced=None):
        super().__init__(name, selection, replaced)
        self._hold("weight", weight)
        self._hold("bias", bias)

    def forward(self, x):
        rows = self.selection.rows(x.shape[0], self.name)
        ids = row_ids(rows)
        W, b = self._value("weight"), self._value("bias")
        per_w = self.weight_key is not None
        if isinstance(rows, int) or not per_w:
            y = F.linear(x, W[rows] if per_w else W)
        elif x.shape[0] * W[0].numel() <= GATHER_LIMIT:
            flat = x.reshape(x.shape[0], -1, x.shape[-1])
            y = torch.bmm(flat, W[ids].transpose(1, 2)).reshape(*x.shape[:-1], W.shape[1])
        else:
            y = x.new_empty(*x.shape[:-1], W.shape[1])
            for u in ids.unique().tolist():
                idx = (ids == u).nonzero().squeeze(1)
                y[idx] = F.linear(x[idx], W[u])
        if b is None:
            return y
        return y + (_per_row(b, rows, y.ndim) if self.bias_key else b)


class PerRowNorm(_BankModule):
    """A LayerNorm with per-model weight and/or bias: LN(x) · w_{m(row)} + b_{m(row)}."""

    def __init__(self, name, selection, norm: torch.nn.LayerNorm, weight, bias):
        super().__init__(name, selection, norm)
        self.shape, self.eps = tuple(norm.normalized_shape), norm.eps
        self._hold("weight", weight)
        self._hold("bias", bias)

    def forward(self, x):
        rows = self.selection.rows(x.shape[0], self.name)
        y = F.layer_norm(x, self.shape, None, None, self.eps)
        tail = len(self.shape)
        w, b = self._value("weight"), self._value("bias")
        if w is not None:
            y = y * (_per_row(w, rows, y.ndim, tail) if self.weight_key else w)
        if b is not None:
            y = y + (_per_row(b, rows, y.ndim, tail) if self.bias_key else b)
        return y


class PerModelModule(_BankModule):
    """Any other module with per-model parameters (a conv, a ViT's position embeddings, an RMS
    norm): run once per distinct model of the batch, on its rows, with that model's parameters
    (``torch.func.functional_call``); tensors of the batch's size in the arguments are split by row."""

    def __init__(self, name, selection, inner: torch.nn.Module, sources: dict):
        super().__init__(name, selection)
        self.inner = inner
        object.__setattr__(self, "_replaced", inner)  # attributes read through to the module it runs
        self.sources = sources  # attr -> callable(row) -> tensor

    def _params(self, u: int) -> dict:
        return {attr: value(u) for attr, value in self.sources.items()}

    def forward(self, *args, **kwargs):
        from torch.func import functional_call

        batch = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
        if batch is None:
            raise BankError(f"module {self.name}: no tensor argument to take the batch size from")
        B = batch.shape[0]
        rows = self.selection.rows(B, self.name)
        if isinstance(rows, int):
            return functional_call(self.inner, self._params(rows), args, kwargs)
        out, ids = None, row_ids(rows)
        for u in ids.unique().tolist():
            idx = (ids == u).nonzero().squeeze(1)
            split = lambda a: a[idx] if isinstance(a, torch.Tensor) and a.ndim and a.shape[0] == B else a  # noqa: E731
            with self.selection.use(u):
                o = functional_call(self.inner, self._params(u), tuple(split(a) for a in args),
                                    {k: split(v) for k, v in kwargs.items()})
            out = _scatter(out, o, idx, B, self.name)
        return out


def _scatter(out, o, idx, B: int, name: str):
    """Place one model's output rows into the batch's output (tensors, or tuples of them)."""
    if isinstance(o, torch.Tensor):
        if out is None:
            out = o.new_zeros(B, *o.shape[1:])
        out[idx] = o
        return out
    if isinstance(o, (tuple, list)):
        out = out if out is not None else [None] * len(o)
        return type(o)(_scatter(a, b, idx, B, name) if b is not None else None for a, b in zip(out, o))
    if o is None:
        return None
    raise BankError(f"module {name}: cannot split an output of type {type(o).__name__} by rows")


class BankModel(torch.nn.Module):
    """A skeleton with a bank attached (:func:`attach`): ``served(*inputs, model_ids=…)``,
    ``served.generate(…, model_ids=…)`` or ``with served.select(ids): served.model(…)``. Model
    ids are keys or rows, one per row of the batch (or one for the whole batch)."""

    def __init__(self, model: torch.nn.Module, selection: Selection):
        super().__init__()
        self.model = model
        object.__setattr__(self, "selection", selection)

    @property
    def bank(self) -> Bank:
        return self.selection.bank

    @contextlib.contextmanager
    def select(self, model_ids):
        with self.selection.use(self.bank.rows(model_ids)):
            yield self.model

    def forward(self, *args, model_ids, **kwargs):
        with self.select(model_ids):
            return self.model(*args, **kwargs)

    def generate(self, *args, model_ids, **kwargs):
        with self.select(model_ids):
            return self.model.generate(*args, **kwargs)

    def append(self, key: str, matrices, kept=None, scales=None, config=None) -> int:
        """Add a model to the attached bank (``Bank.append``); it is served at once."""
        return self.bank.append(key, matrices, kept, scales, config)


def _lowrank_value(m: Matrix, R: torch.Tensor, shape):
    return lambda u: (R + m.U_row @ m.coef[u] @ m.U_col.T).reshape(shape)


def attach(bank: Bank, model: torch.nn.Module, names: Mapping[str, str] | None = None) -> BankModel:
    """Serve every model of ``bank`` from ``model`` (a skeleton of the architecture: for adapters,
    the base model they adapt; its weights are read where the bank adds to them). The skeleton is
    changed in place (its modules replaced, module docstring) and returned wrapped. ``names``:
    checkpoint name → the model's parameter name (transformers ≥ 5 renames some; computed for
    transformers models when not given). The bank follows the skeleton's dtype and device."""
    from .assemble import checkpoint_names

    if names is None:
        names = checkpoint_names(model) if hasattr(model, "save_pretrained") else {}
    own = dict(model.named_parameters(remove_duplicate=False))
    own.update(dict(model.named_buffers(remove_duplicate=False)))
    if not own:
        raise BankError("the skeleton has no parameters")
    ref = next(iter(own.values()))
    bank = bank.to(dtype=ref.dtype if ref.is_floating_point() else None, device=ref.device)
    sel = Selection(bank)
    tied: dict[int, list[str]] = {}
    for pname, t in own.items():
        tied.setdefault(id(t), []).append(pname)

    def locate(ckpt: str, shape, what: str) -> list[str]:
        pname = names.get(ckpt, ckpt)
        if pname not in own:
            raise BankError(f"{what}: the skeleton has no parameter {ckpt!r} (the bank does not fit this model)")
        if tuple(own[pname].shape) != tuple(shape):
            raise BankError(f"{what}: the skeleton's {ckpt} is {tuple(own[pname].shape)}, the bank's "
                            f"{tuple(shape)} (the bank does not fit this model)")
        return tied[id(own[pname])]

    plan: dict[str, dict[str, tuple]] = {}

    def put(pnames, source):
        for p in pnames:
            mod, _, attr = p.rpartition(".")
            plan.setdefault(mod, {})[attr] = source

    for target, m in bank.matrices.items():
        if m.role in ("weight", "delta"):
            where = locate(m.weight, m.shape, f"matrix {target}")
            base = own[where[0]].detach().reshape(m.mean.shape)
            R = m.mean + base if m.role == "delta" else m.mean
            put(where, ("matrix", target, R))
        elif m.role == "lora_A":
            where = locate(m.weight, m.shape, f"LoRA module {m.module}")
            put(where, ("lora", m.module, own[where[0]].detach()))
    for kname, t in bank.kept.items():
        put(locate(kname, t.shape[1:], f"per-model tensor {kname}"), ("kept", kname))

    for mod_name, attrs in sorted(plan.items(), key=lambda kv: (-kv[0].count("."), kv[0])):  # children first
        if not mod_name:
            raise BankError("parameters of the skeleton's root module cannot be served by a bank")
        module = model.get_submodule(mod_name)
        new = _serving_module(mod_name, sel, module, attrs)
        parent, _, child = mod_name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)
    return BankModel(model, sel)


def _shared(module, attr):
    t = getattr(module, attr, None)
    return t.detach() if isinstance(t, torch.Tensor) else None


def _serving_module(name: str, sel: Selection, module: torch.nn.Module, attrs: dict) -> torch.nn.Module:
    """The module that serves ``module`` given what the bank holds of its parameters."""
    bank = sel.bank
    kinds = {a: s[0] for a, s in attrs.items()}
    w, b = attrs.get("weight"), attrs.get("bias")
    bias = b[1] if b and b[0] == "kept" else _shared(module, "bias")
    if isinstance(module, torch.nn.Linear) and set(attrs) <= {"weight", "bias"}:
        if w and w[0] == "matrix":
            return BankLinear(name, sel, w[1], w[2], bias, module)
        if w and w[0] == "lora":
            return BankLoRALinear(name, sel, w[1], w[2], bias, module)
        if set(kinds.values()) == {"kept"}:
            return PerRowLinear(name, sel, w[1] if w else module.weight.detach(), bias, module)
    if isinstance(module, torch.nn.Embedding) and kinds == {"weight": "matrix"} and module.max_norm is None:
        return BankEmbedding(name, sel, w[1], w[2], module)
    if isinstance(module, torch.nn.LayerNorm) and set(kinds.values()) == {"kept"}:
        return PerRowNorm(name, sel, module, w[1] if w else _shared(module, "weight"), bias)
    sources = {}
    for attr, src in attrs.items():
        shape = tuple(getattr(module, attr).shape)
        if src[0] == "kept":
            sources[attr] = (lambda key: lambda u: bank.kept[key][u])(src[1])
        elif src[0] == "matrix":
            sources[attr] = _lowrank_value(bank.matrices[src[1]], src[2], shape)
        else:
            A, B = bank.lora_pair(src[1])
            sources[attr] = (lambda A, B, W, mod: lambda u: W + bank.scales[mod][u] * (B.dense(u) @ A.dense(u)).reshape(W.shape))(
                A, B, src[2], src[1])
    return PerModelModule(name, sel, module, sources)
