r"""Evaluators for transformers models: text classification, image classification, causal LM.

One interface (:mod:`weightspace.evaluators`) with the zoo's: ``base_weights()`` (the frozen
base an adapter is evaluated in) and ``score(config, weights)``, where ``weights`` is a full
state dict in the checkpoint's own names (the original, projected or baseline model, built by
``assemble.effective_weights``). A model skeleton is built once per architecture, offline: from
the base folder for adapters (``AutoModelFor….from_pretrained``), from the store's
``config.json`` for full models (``from_config``); each score loads the weights into it
(strictly: a missing tensor is an error unless it is tied to one that is present).

Each evaluator's section in the collection config (``evaluation:``):

- ``text-classification``: ``data`` (csv/parquet/jsonl: ``text``, ``label`` and optionally
  ``task``: a model is scored on the rows of its own ``weightspace_task`` label), ``tokenizer``
  (default: the base folder), ``max_length``. Metric: accuracy = mean_i [argmax logits_i = y_i].
- ``image-classification``: ``data`` (an image folder: ``{class}/*.png|jpg``; a class folder
  named like the model's ``label2id`` keys maps through it, else classes are numbered in
  sorted order), ``processor`` (an image processor folder or id, default: the base folder).
  Metric: accuracy.
- ``causal-lm``: ``data`` (``prompt``, ``target``, optionally ``task``), ``max_new_tokens``.
  Metrics, every item of every batch counted once:
  ``rouge_l`` = mean_i ROUGE-L F1(greedy continuation of prompt_i, target_i) (rouge-score);
  ``target_loss`` = mean_i (1/|t_i|) Σ_{j ∈ t_i} −log p(x_j | x_<j), the per-item mean token
  loss over the target tokens only (right padding, so positions are those of an unpadded
  item; generation uses left padding). ``accuracy`` is ``rouge_l`` (the column the figures
  plot; the ``metric`` column and the figure labels say "ROUGE-L F1").

All evaluators run batched (``batch_size``) in float32 under ``torch.no_grad()``.
"""

from __future__ import annotations

import copy
import json
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..assemble import checkpoint_names
from ..bank import attach, interleave
from ..layers import read_json


def load_split(spec: dict):
    """A ``datasets`` split: ``{dataset, split, name?, data_files?}``; ``dataset`` is a Hub id,
    a builder (``json``, ``parquet``, ``imagefolder`` with ``data_files``) or a folder written
    by ``save_to_disk``."""
    import datasets

    path = Path(spec["dataset"])
    if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
        ds = datasets.load_from_disk(str(path))
        return ds[spec["split"]] if isinstance(ds, datasets.DatasetDict) else ds
    return datasets.load_dataset(spec["dataset"], spec.get("name"), data_files=spec.get("data_files"),
                                 split=spec["split"])


def read_examples(data) -> pd.DataFrame:
    """A table of evaluation examples: a .csv, .parquet or .jsonl path, or a ``datasets`` split
    (``load_split``) whose columns ``columns: {ours: theirs}`` renames."""
    if isinstance(data, dict):
        df = load_split(data).to_pandas()
        return df.rename(columns={theirs: ours for ours, theirs in data.get("columns", {}).items()})
    path = Path(data)
    if not path.exists():
        raise FileNotFoundError(f"evaluation data {path} does not exist")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix in (".jsonl", ".json"):
        return pd.read_json(path, lines=path.suffix == ".jsonl")
    if path.suffix == ".csv":
        return pd.read_csv(path)
    raise ValueError(f"evaluation data {path}: expected .csv, .parquet or .jsonl")


def _task_rows(df: pd.DataFrame, config: dict, required: tuple[str, ...]) -> pd.DataFrame:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"evaluation data lacks the column(s) {missing}")
    task = (config.get("weightspace_task") or {}).get("label")
    if "task" in df.columns and task is not None:
        df = df[df.task == task]
        if df.empty:
            raise ValueError(f"evaluation data has no rows for task {task!r}")
    return df.reset_index(drop=True)


def load_weights(model, weights: dict[str, torch.Tensor], names: dict[str, str] | None = None,
                 loaded: dict | None = None) -> None:
    """Load a full state dict in checkpoint names into ``model`` (``names``: see
    ``checkpoint_names``); a missing key is allowed only where the model ties it to a present
    one (e.g. lm_head to the embeddings). ``loaded`` ({model name: weak reference to the tensor
    last copied in}, kept by the caller across calls) skips a tensor that is the very object
    already loaded: an adapter's base tensors are copied once, then only what the adapter
    changes (weak references: nothing is kept alive, and a freed tensor is copied again)."""
    names = checkpoint_names(model) if names is None else names
    own = model.state_dict()
    renamed = {names.get(k, k): v for k, v in weights.items()}
    present = {own[k].data_ptr() for k in renamed if k in own}
    untied = [k for k in own if k not in renamed and own[k].data_ptr() not in present]
    unexpected = [k for k in renamed if k not in own]
    if untied or unexpected:
        raise ValueError(f"weights do not fit the model: missing {untied[:5]}, unexpected {unexpected[:5]}")
    loaded = {} if loaded is None else loaded
    changed = {k: v for k, v in renamed.items() if k not in loaded or loaded[k]() is not v}
    model.load_state_dict(changed, strict=False)
    loaded.update({k: weakref.ref(v) for k, v in changed.items()})


class _TransformersEvaluator:
    """Shared machinery: the skeleton per architecture, the base weights, batching."""

    auto_class = ""
    scores = True
    metric = "accuracy"

    def __init__(self, data_seed: int = 0, base_folder: str | None = None,
                 evaluation: dict | None = None):
        self.ev = dict(evaluation or {})
        self.base_folder = self.ev.get("base") or base_folder
        self.batch_size = int(self.ev.get("batch_size", 32))
        self._skeletons: dict[str, tuple[torch.nn.Module, dict[str, str], dict]] = {}
        self._bank_skeletons: dict[str, torch.nn.Module] = {}
        self._base = None

    def _auto(self):
        import transformers

        return getattr(transformers, self.auto_class)

    def base_weights(self) -> dict[str, torch.Tensor] | None:
        if not self.base_folder:
            return None
        if self._base is None:
            model = self._auto().from_pretrained(str(self.base_folder), dtype=torch.float32, use_safetensors=True)
            names = checkpoint_names(model)
            own = model.state_dict()
            self._base = {ck: own[mk].detach().clone() for ck, mk in names.items()}
            self._skeletons["base"] = (model.eval(), names, {})
        return self._base

    def _text_data(self) -> None:
        """The examples table and the tokenizer (``tokenizer``, default: the base folder)."""
        from transformers import AutoTokenizer

        self.data = read_examples(self.ev["data"])
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.ev.get("tokenizer") or self.base_folder))

    def logits(self, model, inputs: dict, ids: torch.Tensor | None = None) -> torch.Tensor:
        """The model's logits on every item, in batches of ``batch_size``; ``ids``: each item's
        model row when ``model`` is a bank (``weightspace.bank.BankModel``)."""
        n = len(next(iter(inputs.values())))
        out = []
        with torch.no_grad():
            for i in range(0, n, self.batch_size):
                extra = {} if ids is None else {"model_ids": ids[i:i + self.batch_size]}
                out.append(model(**{k: v[i:i + self.batch_size] for k, v in inputs.items()}, **extra).logits)
        return torch.cat(out)

    def accuracy(self, model, inputs: dict, y: torch.Tensor) -> dict[str, float]:
        """mean_i [argmax logits_i = y_i] over batches of ``batch_size``; every item counted."""
        correct = int((self.logits(model, inputs).argmax(-1) == y).sum())
        return {"accuracy": correct / len(y), "n_examples": len(y)}

    # ------------------------------------------------------------------ through a bank
    bank_dtype = torch.float32  # the per-model path's precision (float32 skeletons)
    # no weights loaded per model: the realism collection's projected models (12 MiniLM adapters,
    # 4 ks) score in 68 s through the bank, 76 s one at a time (the forward dominates both)
    bank_faster = True

    def bank_model(self, bank):
        """A skeleton serving every model of ``bank`` (``weightspace.bank.attach``): the base
        model for adapters, the architecture of the models' config for full models (float32)."""
        from transformers import AutoConfig

        if bank.adapters:
            key = "base"
            if key not in self._bank_skeletons:
                self._bank_skeletons[key] = self._auto().from_pretrained(
                    str(self.base_folder), dtype=torch.float32, use_safetensors=True).eval()
        else:
            cfg = {k: v for k, v in bank.configs[0].items() if k != "weightspace_task"}
            key = json.dumps(cfg, sort_keys=True, default=str)
            if key not in self._bank_skeletons:
                self._bank_skeletons[key] = self._auto().from_config(AutoConfig.for_model(**cfg)).float().eval()
        return attach(bank, copy.deepcopy(self._bank_skeletons[key]))

    def _mixed(self, per_model: list[dict]) -> tuple[dict, torch.Tensor, torch.Tensor, list[int]]:
        """Every model's inputs (dicts of n_i×… tensors; token tensors padded to one length on the
        tokenizer's side) as one table in interleaved order: (inputs, model of each item, its
        row within its model, n_i)."""
        counts = [len(next(iter(d.values()))) for d in per_model]
        width = max((d["input_ids"].shape[1] for d in per_model if "input_ids" in d), default=0)
        side = getattr(getattr(self, "tokenizer", None), "padding_side", "right")
        pad_id = getattr(getattr(self, "tokenizer", None), "pad_token_id", 0) or 0

        def padded(name, t):
            if t.ndim != 2 or name not in ("input_ids", "attention_mask", "token_type_ids") or t.shape[1] == width:
                return t
            fill = t.new_full((t.shape[0], width - t.shape[1]), pad_id if name == "input_ids" else 0)
            return torch.cat([fill, t] if side == "left" else [t, fill], dim=1)

        table = {k: torch.cat([padded(k, d[k]) for d in per_model]) for k in per_model[0]}
        models, rows = interleave(counts)
        starts = torch.tensor([0] + counts).cumsum(0)[:-1]
        items = starts[models] + rows
        return {k: v[items] for k, v in table.items()}, models, items, counts

    def _per_model(self, values: torch.Tensor, items: torch.Tensor, counts: list[int]) -> list[torch.Tensor]:
        """Values of the interleaved items back in each model's own order, one tensor per model."""
        out = torch.empty_like(values)
        out[items] = values
        return list(out.split(counts))

    def hidden_states(self, model, batch: dict, pooling: str = "auto") -> list[torch.Tensor]:
        """Per layer (embeddings first), one n×d representation per input: ``mean`` over the
        attended tokens (all tokens without a mask), ``cls`` (the first token), ``last`` (the
        last attended token, for causal LMs); ``auto`` = mean for text, cls for images."""
        out = model(**batch, output_hidden_states=True).hidden_states
        mask = batch.get("attention_mask")
        if pooling == "auto":
            pooling = "cls" if mask is None else "mean"
        if pooling == "cls":
            return [h[:, 0] for h in out]
        if mask is None:
            mask = torch.ones(out[0].shape[:2], dtype=torch.long)
        if pooling == "last":
            last = mask.sum(1) - 1  # right padding: the last attended position
            return [h[torch.arange(len(h)), last] for h in out]
        if pooling != "mean":
            raise ValueError(f"unknown pooling {pooling!r}: expected auto, mean, cls or last")
        m = mask.unsqueeze(-1).to(out[0].dtype)
        return [(h * m).sum(1) / m.sum(1) for h in out]

    def probe_texts(self, n: int) -> list[str]:
        """The first ``n`` probe texts: the data's ``text`` column, else prompt + target."""
        if "text" in self.data:
            return list(self.data.text.astype(str))[:n]
        return [p + " " + t for p, t in zip(self.data.prompt.astype(str), self.data.target.astype(str))][:n]

    def probe_id(self, n: int, config: dict | None = None) -> str:
        """A digest of the probe items: the texts (whatever the tokenizer), or the images' pixels."""
        from .zoo import probe_digest

        if hasattr(self, "pixels"):
            return probe_digest(self.pixels[:n].numpy().tobytes())
        return probe_digest("\n".join(self.probe_texts(n)).encode())

    def features(self, config: dict, weights: dict[str, torch.Tensor], n: int,
                 pooling: str = "auto") -> list[torch.Tensor]:
        """Representations of the first ``n`` probe inputs (the evaluation data's inputs, every
        task's, or ``align.probe``) at every layer, pooled (``hidden_states``)."""
        model = self.model(config, weights)
        inputs = self.probe_inputs(n)
        count = len(next(iter(inputs.values())))
        layers: list[list[torch.Tensor]] = []
        with torch.no_grad():
            for i in range(0, count, self.batch_size):
                hs = self.hidden_states(model, {k: v[i:i + self.batch_size] for k, v in inputs.items()}, pooling)
                layers = [a + [h] for a, h in zip(layers, hs)] if layers else [[h] for h in hs]
        return [torch.cat(h).double() for h in layers]

    def model(self, config: dict, weights: dict[str, torch.Tensor]):
        """The skeleton for ``config`` with ``weights`` (checkpoint names) loaded (float32, eval)."""
        from transformers import AutoConfig

        if config.get("peft_type"):  # an adapter: evaluated inside its base
            self.base_weights()
            key = "base"
        else:
            cfg = {k: v for k, v in config.items() if k != "weightspace_task"}
            key = json.dumps(cfg, sort_keys=True, default=str)
            if key not in self._skeletons:
                hf_cfg = AutoConfig.for_model(**cfg)
                model = self._auto().from_config(hf_cfg).float().eval()
                self._skeletons[key] = (model, checkpoint_names(model), {})
        model, names, loaded = self._skeletons[key]
        load_weights(model, weights, names, loaded)
        return model


class TextClassificationEvaluator(_TransformersEvaluator):
    """Accuracy of a sequence-classification model (or base + adapter) on labelled text."""

    auto_class = "AutoModelForSequenceClassification"

    def __init__(self, **kw):
        super().__init__(**kw)
        self._text_data()
        self.max_length = int(self.ev.get("max_length", 64))
        self._encoded: dict = {}
        self._validation = None

    @property
    def has_validation(self) -> bool:
        """Whether ``evaluation.validation`` names tuning examples (``score(split="validation")``)."""
        return bool(self.ev.get("validation"))

    def _inputs(self, config, split: str = "test"):
        task = (config.get("weightspace_task") or {}).get("label")
        if (task, split) not in self._encoded:
            if split == "validation":
                if not self.has_validation:
                    raise ValueError("no validation examples: set evaluation.validation")
                if self._validation is None:
                    self._validation = read_examples(self.ev["validation"])
                data = self._validation
            elif split == "test":
                data = self.data
            else:
                raise ValueError(f"unknown split {split!r}; expected 'test' or 'validation'")
            rows = _task_rows(data, config, ("text", "label"))
            enc = self.tokenizer(list(rows.text.astype(str)), padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
            self._encoded[task, split] = (enc, torch.tensor(rows.label.to_numpy()))
        return self._encoded[task, split]

    def probe_inputs(self, n: int) -> dict:
        return dict(self.tokenizer(self.probe_texts(n), padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt"))

    def score(self, config: dict, weights: dict[str, torch.Tensor], split: str = "test") -> dict[str, float]:
        enc, y = self._inputs(config, split)
        return self.accuracy(self.model(config, weights), dict(enc), y)

    def bank_logits(self, bank, split: str = "test") -> list[torch.Tensor]:
        """Every model's logits on its task's examples, through the bank in mixed batches."""
        inputs, models, items, counts = self._mixed([dict(self._inputs(c, split)[0]) for c in bank.configs])
        return self._per_model(self.logits(self.bank_model(bank), inputs, models), items, counts)

    def score_bank(self, bank, split: str = "test") -> list[dict[str, float]]:
        """Every model's accuracy (as ``score``) through the bank: one mixed-batch pass."""
        return [{"accuracy": float((lg.argmax(-1) == self._inputs(c, split)[1]).double().mean()),
                 "n_examples": len(lg)} for lg, c in zip(self.bank_logits(bank, split), bank.configs)]


class ImageClassificationEvaluator(_TransformersEvaluator):
    """Accuracy of an image-classification model (ViT and kin) on an image folder or a
    ``datasets`` split (``{dataset, split, columns: {image: …, label: …}}``: a ClassLabel
    label column maps through its names)."""

    auto_class = "AutoModelForImageClassification"
    SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")

    def __init__(self, **kw):
        super().__init__(**kw)
        from PIL import Image
        from transformers import AutoImageProcessor

        if isinstance(self.ev["data"], dict):
            images, self.names, self.classes = self._split(self.ev["data"])
        else:
            root = Path(self.ev["data"])
            if not root.is_dir():
                raise FileNotFoundError(f"image folder {root} does not exist")
            self.classes = sorted(p.name for p in root.iterdir() if p.is_dir())
            files = [(f, c) for c in self.classes for f in sorted((root / c).iterdir())
                     if f.suffix.lower() in self.SUFFIXES]
            if not files:
                raise ValueError(f"image folder {root} has no images in class folders")
            images, self.names = [Image.open(f) for f, _ in files], [c for _, c in files]
        processor = AutoImageProcessor.from_pretrained(str(self.ev.get("processor") or self.base_folder))
        self.pixels = processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]

    @staticmethod
    def _split(spec: dict):
        """(images, class name per image, class names) of a datasets split."""
        ds = load_split(spec)
        cols = spec.get("columns", {})
        image, label = cols.get("image", "image"), cols.get("label", "label")
        feature = ds.features[label]
        names = getattr(feature, "names", None)
        labels = ds[label]
        per_item = [names[y] for y in labels] if names else [str(y) for y in labels]
        return list(ds[image]), per_item, list(names) if names else sorted(set(per_item))

    def probe_inputs(self, n: int) -> dict:
        return {"pixel_values": self.pixels[:n]}

    def _labels(self, config: dict) -> torch.Tensor:
        label2id = config.get("label2id") or {}
        if not label2id and self.base_folder:
            label2id = (read_json(self.base_folder, "config.json") or {}).get("label2id") or {}
        if set(self.classes) <= set(label2id):
            return torch.tensor([int(label2id[c]) for c in self.names])
        return torch.tensor([self.classes.index(c) for c in self.names])

    def score(self, config: dict, weights: dict[str, torch.Tensor]) -> dict[str, float]:
        return self.accuracy(self.model(config, weights), {"pixel_values": self.pixels}, self._labels(config))

    def bank_logits(self, bank) -> list[torch.Tensor]:
        """Every model's logits on the images, through the bank in mixed batches."""
        inputs, models, items, counts = self._mixed([{"pixel_values": self.pixels} for _ in bank.configs])
        return self._per_model(self.logits(self.bank_model(bank), inputs, models), items, counts)

    def score_bank(self, bank) -> list[dict[str, float]]:
        """Every model's accuracy (as ``score``) through the bank: one mixed-batch pass."""
        return [{"accuracy": float((lg.argmax(-1) == self._labels(c)).double().mean()), "n_examples": len(lg)}
                for lg, c in zip(self.bank_logits(bank), bank.configs)]


class CausalLMEvaluator(_TransformersEvaluator):
    """ROUGE-L of greedy generations and target loss of a causal LM (base + adapter)."""

    auto_class = "AutoModelForCausalLM"
    metric = "ROUGE-L F1"

    def __init__(self, **kw):
        super().__init__(**kw)
        self._text_data()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.max_new_tokens = int(self.ev.get("max_new_tokens", 16))

    def probe_inputs(self, n: int) -> dict:
        self.tokenizer.padding_side = "right"
        return dict(self.tokenizer(self.probe_texts(n), padding=True, return_tensors="pt"))

    def target_loss(self, model, prompts: list[str], targets: list[str],
                    ids: torch.Tensor | None = None) -> list[float]:
        """Per item: mean −log p over the target's tokens (right-padded batches); ``ids``: each
        item's model row when ``model`` is a bank."""
        tok = self.tokenizer
        out = []
        for i in range(0, len(prompts), self.batch_size):
            extra = {} if ids is None else {"model_ids": ids[i:i + self.batch_size]}
            p_ids = [tok(p)["input_ids"] for p in prompts[i:i + self.batch_size]]
            t_ids = [tok(t, add_special_tokens=False)["input_ids"] for t in targets[i:i + self.batch_size]]
            seqs = [p + t for p, t in zip(p_ids, t_ids)]
            width = max(map(len, seqs))
            ids_ = torch.full((len(seqs), width), tok.pad_token_id)
            mask = torch.zeros_like(ids_)
            labels = torch.full_like(ids_, -100)
            for j, (p, s) in enumerate(zip(p_ids, seqs)):
                ids_[j, :len(s)], mask[j, :len(s)] = torch.tensor(s), 1
                labels[j, len(p):len(s)] = torch.tensor(s[len(p):])
            logits = model(input_ids=ids_, attention_mask=mask, **extra).logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels[:, 1:], reduction="none",
                                                    ignore_index=-100)
            counts = (labels[:, 1:] != -100).sum(1).clamp(min=1)
            out += (nll.sum(1) / counts).tolist()
        return out

    def generate(self, model, prompts: list[str], ids: torch.Tensor | None = None) -> list[str]:
        """Greedy continuations (left-padded batches), the new tokens only, decoded; ``ids``:
        each prompt's model row when ``model`` is a bank."""
        tok = self.tokenizer
        tok.padding_side = "left"
        out = []
        for i in range(0, len(prompts), self.batch_size):
            extra = {} if ids is None else {"model_ids": ids[i:i + self.batch_size]}
            enc = tok(prompts[i:i + self.batch_size], return_tensors="pt", padding=True)
            gen = model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id, **extra)
            out += tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        tok.padding_side = "right"
        return out

    def score(self, config: dict, weights: dict[str, torch.Tensor]) -> dict[str, float]:
        rows = _task_rows(self.data, config, ("prompt", "target"))
        prompts, targets = list(rows.prompt.astype(str)), list(rows.target.astype(str))
        model = self.model(config, weights)
        with torch.no_grad():
            losses = self.target_loss(model, prompts, targets)
            generations = self.generate(model, prompts)
        return self._metrics(targets, generations, losses)

    @staticmethod
    def _metrics(targets: list[str], generations: list[str], losses: list[float]) -> dict[str, float]:
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(["rougeL"])
        rouge = [scorer.score(t, g)["rougeL"].fmeasure for t, g in zip(targets, generations)]
        return {"accuracy": float(np.mean(rouge)), "rouge_l": float(np.mean(rouge)),
                "target_loss": float(np.mean(losses)), "n_examples": len(rouge)}

    def bank_outputs(self, bank) -> list[tuple[list[str], list[str], list[float]]]:
        """Per model (targets, greedy generations, per-item target losses) of its task's items,
        through the bank in mixed batches (items of all models interleaved)."""
        items = [_task_rows(self.data, c, ("prompt", "target")) for c in bank.configs]
        models, rows = interleave([len(r) for r in items])
        prompts = [str(items[m].prompt.iloc[r]) for m, r in zip(models.tolist(), rows.tolist())]
        targets = [str(items[m].target.iloc[r]) for m, r in zip(models.tolist(), rows.tolist())]
        served = self.bank_model(bank)
        with torch.no_grad():
            losses = self.target_loss(served, prompts, targets, models)
            generations = self.generate(served, prompts, models)
        out = []
        for m in range(len(items)):
            sel = (models == m).nonzero().squeeze(1).tolist()
            order = sorted(sel, key=lambda j: int(rows[j]))
            out.append(([targets[j] for j in order], [generations[j] for j in order], [losses[j] for j in order]))
        return out

    def score_bank(self, bank) -> list[dict[str, float]]:
        """Every model's ROUGE-L and target loss (as ``score``) through the bank."""
        return [self._metrics(*o) for o in self.bank_outputs(bank)]
