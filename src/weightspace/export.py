r"""Compressed models in formats other tools load: PEFT LoRA adapters, safetensors, a bundle.

Delta view. A compressed adapter is ΔŴ_i = μ + U_r C_i U_cᵀ with C_i = U_rᵀ (ΔW_i − μ) U_c
(U_r, U_c the leading k_r, k_c directions). With the projectors P_r = U_r U_rᵀ, P_c = U_c U_cᵀ,

    ΔŴ_i = (μ − P_r μ P_c)  +  P_r ΔW_i P_c,

a part shared by every model and a part of rank ≤ min(k_r, k_c, r_i) (ΔW_i = s B_i A_i has rank
r_i). It is exported as two PEFT LoRA adapters that PEFT adds together (multi-adapter loading,
``load_delta_export``):

- ``shared/``: one per collection and k, the factors of μ − P_r μ P_c at its numerical rank ρ;
- ``models/{model}/``: one per model, of rank min(k_r, k_c, r_i): B = s P_r B_i, A = A_i P_c
  when r_i is the smaller, else B A = U_r (C_i + U_rᵀ μ U_c) U_cᵀ (``coefficient_lora``), with
  the model's own kept tensors (e.g. its head).

A model's own adapter is therefore never larger than its original (rank min(k, r) ≤ r) and
costs, beside it, its share ρ·(m + n)/N of ``shared/``; it is smaller than the original only
when k < r (a LoRA holding a rank-r product needs r·(m + n) numbers; the k×k coefficients alone
are what the bundle stores). Every module is padded with zero columns/rows to one rank per
adapter (PEFT keeps one r per adapter) and ``lora_alpha = r``, so PEFT's scale lora_alpha / r is
exactly 1. Configs are PEFT's own ``LoraConfig`` (``save_pretrained``); the base path is written
relative to the adapter folder when the base is a local folder. (The reference implementation
of the paper saved its reconstructed adapters with a quarter of the original scale.)
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING
from pathlib import Path

import torch

if TYPE_CHECKING:  # pandas is imported where a table is built (a light import for most jobs)
    import pandas as pd

from .io import atomic_path, folder_bytes, relative_base, write_safetensors
from .zoo import PEFT_PREFIX


def low_rank_factors(M: torch.Tensor, rtol: float = 1e-10) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, A) with B A = M at M's numerical rank (singular values above rtol·σ_max)."""
    U, s, Vh = torch.linalg.svd(M, full_matrices=False)
    r = int((s > rtol * (s[0] if len(s) else 0)).sum())
    return U[:, :r] * s[:r], Vh[:r]


def coefficient_lora(C: torch.Tensor, U_row: torch.Tensor, U_col: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, A) with B A = U_row C U_colᵀ at rank min(k_r, k_c): C (k_r×k_c) goes on the side
    that keeps the rank small."""
    kr, kc = C.shape
    if kr <= kc:
        return U_row[:, :kr], C @ U_col[:, :kc].T
    return U_row[:, :kr] @ C, U_col[:, :kc].T


def delta_export_factors(lowrank, C: torch.Tensor, mean: torch.Tensor, U_row: torch.Tensor,
                         U_col: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, A) of one model's own adapter: B A = P_r ΔW P_c = U_r (C + U_rᵀ μ U_c) U_cᵀ at rank
    min(k_r, k_c, r) (module docstring); ``lowrank`` is the model's ΔW = s·B·A (core.lowrank.LowRank)."""
    kr, kc = C.shape
    Ur, Uc = U_row[:, :kr], U_col[:, :kc]
    if lowrank.B.shape[1] < min(kr, kc):
        B, A = lowrank.B.to(Ur.dtype), lowrank.A.to(Ur.dtype)
        return lowrank.scale * (Ur @ (Ur.T @ B)), (A @ Uc) @ Uc.T
    return coefficient_lora(C + Ur.T @ mean @ Uc, Ur, Uc)


def shared_delta(mean: torch.Tensor, U_row: torch.Tensor, U_col: torch.Tensor, kr: int, kc: int) -> torch.Tensor:
    """μ − P_r μ P_c: the part of every compressed delta that no model's own adapter carries."""
    Ur, Uc = U_row[:, :kr], U_col[:, :kc]
    return mean - Ur @ (Ur.T @ mean @ Uc) @ Uc.T


def write_peft_adapter(out_dir: str | os.PathLike, modules: dict[str, tuple[torch.Tensor, torch.Tensor]],
                       base_model: str, dtype=torch.float32, task_type: str | None = None,
                       modules_to_save: list[str] | None = None,
                       kept: dict[str, torch.Tensor] | None = None) -> int:
    """Write a PEFT LoRA adapter folder with B A added to each module at scale exactly 1.

    ``modules`` maps PEFT module names (``base_model.model.…`` or bare) to (B: m×r_i, A: r_i×n);
    ``target_modules`` lists their full paths, so PEFT adapts exactly these modules. The config
    is PEFT's ``LoraConfig`` (saved by its ``save_pretrained``). ``kept``: tensors the adapter
    carries as they are (e.g. its ``modules_to_save`` head), by their names in the original
    adapter file. Returns the adapter's rank r (the largest r_i; smaller ones are zero-padded).
    """
    from peft import LoraConfig

    r = max(1, max(B.shape[1] for B, _ in modules.values()))
    tensors, targets = dict(kept or {}), set()
    for name, (B, A) in modules.items():
        name = name if name.startswith(PEFT_PREFIX) else PEFT_PREFIX + name
        pad = r - B.shape[1]
        B = torch.cat([B, B.new_zeros(B.shape[0], pad)], dim=1)
        A = torch.cat([A, A.new_zeros(pad, A.shape[1])], dim=0)
        tensors[f"{name}.lora_A.weight"] = A.to(dtype).contiguous()
        tensors[f"{name}.lora_B.weight"] = B.to(dtype).contiguous()
        targets.add(name.removeprefix(PEFT_PREFIX))
    config = LoraConfig(r=r, lora_alpha=r, lora_dropout=0.0, target_modules=sorted(targets), bias="none",
                        task_type=task_type, modules_to_save=modules_to_save or None, inference_mode=True,
                        base_model_name_or_path=relative_base(base_model, out_dir))
    with atomic_path(out_dir) as tmp:
        Path(tmp).mkdir(parents=True)
        write_safetensors(tensors, Path(tmp) / "adapter_model.safetensors", metadata={"format": "pt"})
        config.save_pretrained(str(tmp))
    return r


def load_delta_export(base_model: torch.nn.Module, export_dir: str | os.PathLike, model: str):
    """A delta-view export as PEFT loads it: the collection's ``shared`` adapter and the model's
    own adapter, both active, so the base gains μ + U_r C U_cᵀ (PEFT sums active LoRAs).

    >>> peft_model = load_delta_export(base, "results/c/export/delta/k16", "org--name")
    """
    from peft import PeftModel

    export_dir = Path(export_dir)
    for folder in (export_dir / "shared", export_dir / "models" / model):
        if not (folder / "adapter_model.safetensors").is_file():  # PEFT would fall back to a pickle
            raise FileNotFoundError(f"model {model}: no adapter_model.safetensors in {folder}")
    peft_model = PeftModel.from_pretrained(base_model, str(export_dir / "shared"), adapter_name="shared")
    peft_model.load_adapter(str(export_dir / "models" / model), adapter_name="model")
    peft_model.base_model.set_adapter(["shared", "model"])
    return peft_model


# ----------------------------------------------------------------------------- the bundle
def write_bundle(path: str | os.PathLike, subspaces: dict, coeff_path: str, store_paths: list[str],
                 view: str, k: int, dtype=torch.float32) -> int:
    """One safetensors file with everything needed to rebuild every model at k: per target the
    mean and the leading factors (``basis/{target}/…``), per model its k_r×k_c coefficients
    (``coef/{model}/{target}``) and the tensors the view keeps as they are
    (``kept/{model}/{name}``). Returns its size in bytes."""
    import numpy as np
    import zarr

    from . import layers
    from .project import core_size
    from .store import ModelStore

    coeffs = zarr.open_group(coeff_path, mode="r")
    index = {key: i for i, key in enumerate(coeffs.attrs["models"])}
    tensors = {}
    for name, sub in subspaces.items():
        kr, kc = core_size(k, sub.U_row, sub.U_col)
        tensors[f"basis/{name}/mean"] = sub.mean.to(dtype)
        tensors[f"basis/{name}/U_row"] = sub.U_row[:, :kr].to(dtype)
        tensors[f"basis/{name}/U_col"] = sub.U_col[:, :kc].to(dtype)
    models = []
    for p in store_paths:
        st = ModelStore(p)
        models.append(st.key)
        for name, sub in subspaces.items():
            kr, kc = core_size(k, sub.U_row, sub.U_col)
            C = np.asarray(coeffs[name][index[st.key]])[:kr, :kc]
            tensors[f"coef/{st.key}/{name}"] = torch.from_numpy(np.ascontiguousarray(C)).to(dtype)
        for n in layers.kept_tensors(st, view):
            tensors[f"kept/{st.key}/{n}"] = st.read(n)
    meta = {"view": view, "k": str(k), "models": json.dumps(models),
            "shapes": json.dumps({n: list(sub.shape) for n, sub in subspaces.items()})}
    with atomic_path(path) as tmp:
        write_safetensors({key: t.contiguous() for key, t in tensors.items()}, tmp, metadata=meta)
    return Path(path).stat().st_size


def load_from_bundle(path: str | os.PathLike, model: str) -> dict[str, torch.Tensor]:
    """Rebuild one model from a bundle: {target: μ + U_row C U_colᵀ} and its kept tensors
    (targets as m×n matrices, in float64)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        if model not in json.loads(meta["models"]):
            raise KeyError(f"model {model} is not in the bundle {path}")
        out = {}
        for name in json.loads(meta["shapes"]):
            mean, Ur, Uc = (f.get_tensor(f"basis/{name}/{x}").double() for x in ("mean", "U_row", "U_col"))
            out[name] = mean + Ur @ f.get_tensor(f"coef/{model}/{name}").double() @ Uc.T
        prefix = f"kept/{model}/"
        for key in f.keys():
            if key.startswith(prefix):
                out[key[len(prefix):]] = f.get_tensor(key)
    return out


# ----------------------------------------------------------------------------- the stage
def lora_config_from(cfg: dict, out_dir: str | os.PathLike, base: str | None):
    """PEFT's ``LoraConfig`` from a source adapter config: the fields PEFT knows (others, e.g.
    the zoo's task label, are dropped), the base path relative to ``out_dir`` where it is local."""
    import dataclasses

    from peft import LoraConfig

    known = {f.name for f in dataclasses.fields(LoraConfig)} - {"peft_type", "base_model_name_or_path"}
    kw = {key: value for key, value in cfg.items() if key in known}
    return LoraConfig(**kw, base_model_name_or_path=relative_base(base or cfg.get("base_model_name_or_path", ""),
                                                                  out_dir))


def export_models(store_paths: list[str], subspaces: dict, coeff_path: str, view: str, k: int,
                  out_dir: str | os.PathLike, base: str | None = None) -> list[dict]:
    """Write every model, compressed at k, in its source format, and the collection's bundle.

    ``out_dir/bundle.safetensors`` (see ``write_bundle``) and ``out_dir/models/{model}/``:
    a full model as ``model.safetensors`` + its ``config.json``; an adapter as a PEFT adapter
    folder: the factors view with its original r and lora_alpha, the delta view as an adapter
    of rank min(k, r) per model beside the collection's ``out_dir/shared/`` adapter (module
    docstring; ``load_delta_export``). ``base``: the collection's local base folder, written relative to
    each adapter. Returns one row per model (folder, rank, bytes of its export and of the
    original it stands for, bytes of the shared mean adapter).
    """
    import numpy as np
    import zarr

    from . import layers
    from .assemble import original_bytes
    from .project import core_size
    from .store import ModelStore

    coeffs = zarr.open_group(coeff_path, mode="r")
    index = {key: i for i, key in enumerate(coeffs.attrs["models"])}
    rows = []
    with atomic_path(out_dir) as tmp:
        tmp = Path(tmp)
        (tmp / "models").mkdir(parents=True)
        size = write_bundle(tmp / "bundle.safetensors", subspaces, coeff_path, store_paths, view, k)
        if view == "delta":
            cfg0 = ModelStore(store_paths[0]).attrs.get("adapter_config") or {}
            shared = {n: low_rank_factors(shared_delta(sub.mean, sub.U_row, sub.U_col,
                                                       *core_size(k, sub.U_row, sub.U_col)))
                      for n, sub in subspaces.items()}
            # no task type: PEFT would then expect the task's head (modules_to_save) in it too;
            # the head belongs to each model's own adapter
            write_peft_adapter(tmp / "shared", shared, base or cfg0.get("base_model_name_or_path", ""))
        for p in store_paths:
            st = ModelStore(p)
            folder = tmp / "models" / st.key
            mats = {}
            for name, sub in subspaces.items():
                kr, kc = core_size(k, sub.U_row, sub.U_col)
                C = torch.from_numpy(np.asarray(coeffs[name][index[st.key]])[:kr, :kc]).double()
                mats[name] = C
            cfg = st.attrs.get("adapter_config") or {}
            if view == "delta":
                own = {t.name: layers.read_target(st, t) for t in layers.targets(st, view) if t.name in mats}
                mods = {n: delta_export_factors(own[n], C, subspaces[n].mean, subspaces[n].U_row, subspaces[n].U_col)
                        for n, C in mats.items()}
                rank = write_peft_adapter(folder, mods, base or cfg.get("base_model_name_or_path", ""),
                                          task_type=cfg.get("task_type"),
                                          modules_to_save=cfg.get("modules_to_save"),
                                          kept={n: st.read(n) for n in layers.kept_tensors(st, view)})
            else:
                from .project import reconstruct

                tensors = {n: st.read(n) for n in layers.kept_tensors(st, view)}
                for name, C in mats.items():
                    sub = subspaces[name]
                    src = sub.sources[0]
                    tensors[src] = reconstruct(C, sub.mean, sub.U_row, sub.U_col).reshape(
                        st.shape(src)).to(st.read(src).dtype)
                folder.mkdir(parents=True)
                if view == "factors":
                    write_safetensors({n: t.contiguous() for n, t in tensors.items()},
                                      folder / "adapter_model.safetensors", metadata={"format": "pt"})
                    lora_config_from(cfg, Path(out_dir) / "models" / st.key, base).save_pretrained(str(folder))
                    rank = cfg.get("r")
                else:
                    write_safetensors({n: t.contiguous() for n, t in tensors.items()},
                                      folder / "model.safetensors", metadata={"format": "pt"})
                    (folder / "config.json").write_text(json.dumps(st.attrs.get("config") or {}, indent=2) + "\n")
                    rank = None
            rows.append({"model": st.key, "k": k, "view": view, "rank": rank,
                         "folder": str(Path(out_dir) / "models" / st.key), "bundle_bytes": size,
                         "export_bytes": folder_bytes(folder), "original_bytes": original_bytes(st, view)})
        shared = folder_bytes(tmp / "shared") if view == "delta" else 0
        for row in rows:
            row["shared_export_bytes"] = shared
    return rows


def export_table(rows: list[dict]) -> pd.DataFrame:
    """Bytes on disk of the export per model against the original it stands for: its own
    folder plus its 1/N share of the ``shared`` adapter (delta view), and the ratio."""
    import pandas as pd

    t = pd.DataFrame(rows)
    if t.empty:
        return t
    t["per_model_bytes"] = t["export_bytes"] + t["shared_export_bytes"] / len(t)
    t["ratio_to_original"] = t["per_model_bytes"] / t["original_bytes"]
    return t[["model", "view", "k", "rank", "export_bytes", "shared_export_bytes", "per_model_bytes",
              "original_bytes", "ratio_to_original"]]
