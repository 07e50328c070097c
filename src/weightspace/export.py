r"""Compressed models in formats other tools load: PEFT LoRA adapters.

A compressed adapter in the delta view is ΔŴ = μ + U_r,k C U_c,kᵀ. It is written as a LoRA
whose product is exactly ΔŴ, without an m×n SVD of the sum: with μ = B_μ A_μ (the mean's own
factors at its numerical rank ρ),

    B' = [B_μ, U_r,k C]   (m × (ρ + k)),      A' = [A_μ ; U_c,kᵀ]   ((ρ + k) × n),

(C on whichever side keeps the rank at ρ + min(k_r, k_c) when the core is not square)

so B' A' = μ + U_r,k C U_c,kᵀ. Every module is padded with zero columns/rows to one rank r (PEFT
keeps one r per adapter) and ``lora_alpha = r``, so PEFT's scale lora_alpha / r is exactly 1 and
it adds B' A' = ΔŴ to the base weight. (The reference implementation of the paper saved its
reconstructed adapters with a quarter of the original scale.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from .io import atomic_path
from .zoo import PEFT_PREFIX


def low_rank_factors(M: torch.Tensor, rtol: float = 1e-10) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, A) with B A = M at M's numerical rank (singular values above rtol·σ_max)."""
    U, s, Vh = torch.linalg.svd(M, full_matrices=False)
    r = int((s > rtol * (s[0] if len(s) else 0)).sum())
    return U[:, :r] * s[:r], Vh[:r]


def delta_lora(mean_factors: tuple[torch.Tensor, torch.Tensor], C: torch.Tensor,
               U_row: torch.Tensor, U_col: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B', A') with B' A' = μ + U_row C U_colᵀ (see the module docstring); C (k_r×k_c) goes on
    the side that keeps the rank at ρ + min(k_r, k_c)."""
    B_mu, A_mu = mean_factors
    kr, kc = C.shape
    if kr <= kc:
        B2, A2 = U_row[:, :kr], C @ U_col[:, :kc].T
    else:
        B2, A2 = U_row[:, :kr] @ C, U_col[:, :kc].T
    return torch.cat([B_mu, B2], dim=1), torch.cat([A_mu, A2], dim=0)


def write_peft_adapter(out_dir: str | os.PathLike, modules: dict[str, tuple[torch.Tensor, torch.Tensor]],
                       base_model: str, dtype=torch.float32, extra_config: dict | None = None,
                       kept: dict[str, torch.Tensor] | None = None) -> int:
    """Write a PEFT LoRA adapter folder with B A added to each module at scale exactly 1.

    ``modules`` maps PEFT module names (``base_model.model.…`` or bare) to (B: m×r_i, A: r_i×n);
    ``target_modules`` lists their full paths, so PEFT adapts exactly these modules. ``kept``:
    tensors the adapter carries as they are (e.g. its ``modules_to_save`` head), by their names
    in the original adapter file. Returns the adapter's rank r (the largest r_i; smaller ones
    are zero-padded).
    """
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
    config = {"peft_type": "LORA", "task_type": None, "base_model_name_or_path": base_model, "r": r,
              "lora_alpha": r, "lora_dropout": 0.0, "target_modules": sorted(targets), "bias": "none",
              "use_rslora": False, "fan_in_fan_out": False, "inference_mode": True, **(extra_config or {})}
    with atomic_path(out_dir) as tmp:
        Path(tmp).mkdir(parents=True)
        save_file(tensors, str(Path(tmp) / "adapter_model.safetensors"), metadata={"format": "pt"})
        (Path(tmp) / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return r


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
        save_file({key: t.contiguous() for key, t in tensors.items()}, str(tmp), metadata=meta)
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
def export_models(store_paths: list[str], subspaces: dict, coeff_path: str, view: str, k: int,
                  out_dir: str | os.PathLike) -> list[dict]:
    """Write every model, compressed at k, in its source format, and the collection's bundle.

    ``out_dir/bundle.safetensors`` (see ``write_bundle``) and ``out_dir/models/{model}/``:
    a full model as ``model.safetensors`` + its ``config.json``; an adapter as a PEFT adapter
    folder: the factors view with its original r and lora_alpha, the delta view through
    ``delta_lora`` with lora_alpha = r. Returns one row per model (folder, rank, bytes).
    """
    import numpy as np
    import zarr

    from . import layers
    from .project import core_size
    from .store import ModelStore

    coeffs = zarr.open_group(coeff_path, mode="r")
    index = {key: i for i, key in enumerate(coeffs.attrs["models"])}
    mean_factors = ({n: low_rank_factors(sub.mean) for n, sub in subspaces.items()} if view == "delta" else {})
    rows = []
    with atomic_path(out_dir) as tmp:
        tmp = Path(tmp)
        (tmp / "models").mkdir(parents=True)
        size = write_bundle(tmp / "bundle.safetensors", subspaces, coeff_path, store_paths, view, k)
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
                mods = {n: delta_lora(mean_factors[n], C, subspaces[n].U_row, subspaces[n].U_col)
                        for n, C in mats.items()}
                carried = {key: cfg[key] for key in ("task_type", "modules_to_save") if cfg.get(key)}
                rank = write_peft_adapter(folder, mods, cfg.get("base_model_name_or_path", ""),
                                          extra_config=carried,
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
                    save_file({n: t.contiguous() for n, t in tensors.items()},
                              str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
                    (folder / "adapter_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
                    rank = cfg.get("r")
                else:
                    save_file({n: t.contiguous() for n, t in tensors.items()},
                              str(folder / "model.safetensors"), metadata={"format": "pt"})
                    (folder / "config.json").write_text(json.dumps(st.attrs.get("config") or {}, indent=2) + "\n")
                    rank = None
            rows.append({"model": st.key, "k": k, "view": view, "rank": rank,
                         "folder": str(Path(out_dir) / "models" / st.key), "bundle_bytes": size})
    return rows
