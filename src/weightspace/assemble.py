r"""A model's weights from its view: what a forward pass uses, given the view's matrices.

One module below the stages that need it (evaluate, merge, export, align, bank): a model is
its store (kept tensors, config) plus the view's target matrices, original or reconstructed.

- ``full``:    the targets reshaped to their tensors, with the kept tensors (biases, norms);
- ``factors``: W_base + s·B·A per LoRA module (s = lora_alpha / r, ``layers.lora_scale``);
- ``delta``:   W_base + ΔW per LoRA module;

and for adapters the tensors an adapter replaces outright (PEFT ``modules_to_save``, e.g. a
classifier head) taken from the adapter as they are, under their base names.
"""

from __future__ import annotations

import torch

from . import layers
from .store import ModelStore
from .zoo import PEFT_PREFIX


def module_weight_name(module: str) -> str:
    """The base model's weight of a LoRA module: ``base_model.model.fc1`` → ``fc1.weight``."""
    return module.removeprefix(PEFT_PREFIX) + ".weight"


def base_name(adapter_tensor: str) -> str:
    """The base model's name of a tensor an adapter replaces (PEFT modules_to_save)."""
    return adapter_tensor.removeprefix(PEFT_PREFIX).replace(".modules_to_save.default.", ".")


def model_config(store: ModelStore) -> dict:
    """A model's config: the adapter's (adapters) or the model's ``config.json``."""
    return store.attrs.get("adapter_config") or store.attrs.get("config") or {}


def effective_weights(view: str, store: ModelStore, mats: dict[str, torch.Tensor],
                      base: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """The weights a forward pass uses, given the view's (reconstructed) target matrices. An
    adapter's unchanged base tensors are the base's own objects (not copies), so an evaluator
    can tell which tensors changed by identity."""
    kept = {n: store.read(n).double() for n in layers.kept_tensors(store, view)}
    if view == "full":
        shapes = {n: store.shape(n) for n in mats}
        return {**kept, **{n: M.reshape(shapes[n]) for n, M in mats.items()}}
    if base is None:
        raise ValueError(f"model {store.key}: an adapter is evaluated inside its base model, and this "
                         "collection has none (set evaluation.base)")
    out = dict(base)
    for n, t in kept.items():  # tensors the adapter replaces outright (a classifier head)
        if base_name(n) not in out:
            raise ValueError(f"model {store.key}: adapter tensor {n} has no counterpart in the base")
        out[base_name(n)] = t
    cfg = store.attrs.get("adapter_config") or {}
    if view == "factors":
        for module, (a, b) in layers.lora_pairs(store.names()).items():
            dW = layers.lora_scale(cfg, module) * (mats[b] @ mats[a])
            out[module_weight_name(module)] = out[module_weight_name(module)] + dW
    elif view == "delta":
        for module, dW in mats.items():
            out[module_weight_name(module)] = out[module_weight_name(module)] + dW
    return out


def original_bytes(store: ModelStore, view: str) -> int:
    """Bytes of a model's tensors the view covers (its analysed matrices and the kept ones),
    in their source dtype: what a compressed model stands for."""
    kept = sum(store.nbytes(n) for n in layers.kept_tensors(store, view))
    return kept + sum(store.nbytes(s) for t in layers.targets(store, view) for s in t.sources)


def checkpoint_names(model) -> dict[str, str]:
    """{name in a saved checkpoint: name in ``model.state_dict()``}. transformers ≥ 5 renames
    some modules inside the model (ViT's ``encoder.layer.0.attention.attention.query`` is
    ``layers.0.attention.q_proj``) and reverts the names on save; the revert is applied to the
    model's own tensors and matched back by identity, so the map holds only pure renames."""
    own = model.state_dict()
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # transformers 4: checkpoint names are the module names
        return {k: k for k in own}
    ptr = {v.data_ptr(): k for k, v in own.items()}
    out = {}
    for name, t in revert_weight_conversion(model, dict(own)).items():
        if t.data_ptr() not in ptr:
            raise NotImplementedError(f"{type(model).__name__}: the checkpoint tensor {name} is not one "
                                      "of the model's own (fused weights), which weightspace cannot map")
        out[name] = ptr[t.data_ptr()]
    return out
