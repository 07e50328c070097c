"""The built-in zoo's evaluator (digits tasks), and ``none`` (no task metric)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from .. import layers, zoo
from ..bank import attach, interleave


class ZooEvaluator:
    """Accuracy of a zoo MLP (or base + adapter) on its task's held-out digits."""

    metric = "accuracy"
    has_validation = True

    def __init__(self, data_seed: int = 0, base_folder: str | None = None, evaluation=None):
        self.data_seed = data_seed
        self.base, self.base_config = None, None
        if base_folder:
            self.base = load_file(str(Path(base_folder) / "model.safetensors"))
            self.base_config = layers.read_json(base_folder, "config.json")

    def base_weights(self) -> dict[str, torch.Tensor] | None:
        """The base model's weights, None for a collection without one."""
        return self.base

    def score(self, config: dict, weights: dict[str, torch.Tensor], split: str = "test") -> dict[str, float]:
        """Accuracy on the task's test digits, or (``split="validation"``) on the validation
        examples (:func:`weightspace.zoo.validation_split`), the tuning data of adapt and merge."""
        sizes = config.get("layer_sizes") or self.base_config["layer_sizes"]
        x, y = self._task_data(config, split)
        with torch.no_grad():
            logits = zoo.mlp_forward(weights, x.double(), len(sizes) - 1)
        return {"accuracy": float((logits.argmax(1) == y).double().mean())}

    bank_dtype = torch.float64  # the per-model path's precision (mlp_forward in float64)
    # the zoo's MLPs are tiny and k is up to a quarter of their width: the evaluate job of
    # digits-mlp-shared takes 3.2 s through the bank, 2.8 s one model at a time (2 cores)
    bank_faster = False

    def _task_data(self, config: dict, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
        """The task's examples of ``split`` from the data set it names (``zoo.task_dataset``)."""
        task = config["weightspace_task"]
        data = zoo.task_dataset(task, self.data_seed)
        if split == "validation":
            x, y = zoo.validation_split(data)[2:]
        elif split == "test":
            x, y = data.x_test, data.y_test
        else:
            raise ValueError(f"unknown split {split!r}; expected 'test' or 'validation'")
        return zoo.task_inputs_targets(task, x, y)

    def _probe(self, config: dict, n: int) -> torch.Tensor:
        """The first ``n`` plain test images of the data set the model's task names."""
        task = config.get("weightspace_task") or (self.base_config or {}).get("weightspace_task") or {}
        return zoo.task_dataset(task, self.data_seed).x_test[:n]

    def bank_logits(self, bank, split: str = "test", batch_size: int = 4096) -> list[torch.Tensor]:
        """Every model's logits on its own task's digits, from the bank in mixed batches (rows of
        all models interleaved, ``bank.interleave``), in each model's own row order."""
        sizes = (bank.configs[0].get("layer_sizes") if bank.configs else None) or self.base_config["layer_sizes"]
        skeleton = (zoo.MLP.from_weights(self.base, dtype=self.bank_dtype) if bank.adapters
                    else zoo.MLP(sizes).to(self.bank_dtype))
        served = attach(bank, skeleton)
        data = [self._task_data(cfg, split) for cfg in bank.configs]
        models, rows = interleave([len(y) for _, y in data])
        x = torch.cat([x for x, _ in data]).to(self.bank_dtype)
        offsets = torch.tensor([0] + [len(y) for _, y in data]).cumsum(0)[:-1]
        out = torch.empty(len(models), sizes[-1], dtype=self.bank_dtype)
        with torch.no_grad():
            for i in range(0, len(models), batch_size):
                m, r = models[i:i + batch_size], rows[i:i + batch_size]
                out[i:i + batch_size] = served(x[offsets[m] + r], model_ids=m)
        order = torch.argsort(models * (int(rows.max()) + 1) + rows)
        return list(out[order].split([len(y) for _, y in data]))

    def score_bank(self, bank, split: str = "test") -> list[dict[str, float]]:
        """Every model's accuracy (as ``score``) through the bank: one mixed-batch pass."""
        logits = self.bank_logits(bank, split)
        return [{"accuracy": float((lg.argmax(1) == self._task_data(cfg, split)[1]).double().mean())}
                for lg, cfg in zip(logits, bank.configs)]

    def features(self, config: dict, weights: dict[str, torch.Tensor], n: int,
                 pooling: str = "auto") -> list[torch.Tensor]:
        """Each hidden layer's activations and the logits on the first ``n`` plain held-out
        images of the model's data set (the same probe inputs for every model of a data set,
        whatever its task; no pooling)."""
        sizes = config.get("layer_sizes") or self.base_config["layer_sizes"]
        hidden: list[torch.Tensor] = []
        with torch.no_grad():
            logits = zoo.mlp_forward(weights, self._probe(config, n).double(), len(sizes) - 1, hidden)
        return hidden + [logits]

    def probe_id(self, n: int, config: dict | None = None) -> str:
        """A digest of the probe inputs: the first ``n`` held-out images of the data set a
        model's ``config`` names (the digits without one), this data seed."""
        return probe_digest(self._probe(config or {}, n).numpy().tobytes())


def probe_digest(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()[:16]


class NoEvaluator:
    """For collections without a task evaluator yet: reconstruction errors and memory only."""

    scores = False
    metric = None

    def __init__(self, **_):
        pass

    def base_weights(self):
        return None

    def score(self, config, weights) -> dict[str, float]:
        return {"accuracy": float("nan")}
