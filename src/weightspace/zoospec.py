"""What a zoo collection holds: its models' keys and tasks, the task families and the spec
defaults (the training is ``weightspace.zoo``).

Read when the workflow is parsed (sources, the collection table, adapt's families), so it
imports no torch: every Snakemake invocation, and every job a cluster runs, parses the workflow.
"""

from __future__ import annotations

import os

import numpy as np


def make_task(name: str, rng: np.random.Generator) -> dict:
    """A random task of the given family (see the module docstring)."""
    if name == "permutation":
        mapping = rng.permutation(10)
        return {"kind": "relabel", "family": name, "mapping": mapping.tolist(),
                "label": "perm-" + "".join(map(str, mapping))}
    if name == "partition":
        g = int(rng.integers(2, 6))
        mapping = np.concatenate([np.arange(g), rng.integers(0, g, 10 - g)])
        rng.shuffle(mapping)
        return {"kind": "relabel", "family": name, "mapping": mapping.tolist(),
                "label": f"part{g}-" + "".join(map(str, mapping))}
    if name == "rotate":
        angle = float(rng.choice([-1, 1]) * rng.uniform(15, 45))
        return {"kind": "transform", "family": name, "angle": round(angle, 2), "shift": [0.0, 0.0],
                "label": f"rot{angle:+.0f}"}
    if name == "shift":
        dx, dy = (float(v) for v in rng.choice([-2, -1, 0, 1, 2], size=2))
        if dx == 0 and dy == 0:
            dx = 2.0
        return {"kind": "transform", "family": name, "angle": 0.0, "shift": [dx, dy],
                "label": f"shift{dx:+.0f}{dy:+.0f}"}
    plain = {"kind": "transform", "family": name, "angle": 0.0, "shift": [0.0, 0.0]}
    if name == "rotate-large":
        angle = float(rng.choice([-1, 1]) * rng.uniform(60, 90))
        return {**plain, "angle": round(angle, 2), "label": f"rotL{angle:+.0f}"}
    if name == "scale":
        factor = float(rng.choice([rng.uniform(0.6, 0.8), rng.uniform(1.25, 1.5)]))
        return {**plain, "scale": round(factor, 3), "label": f"scale{factor:.2f}"}
    if name == "blur":
        sigma = float(rng.uniform(0.7, 1.1))
        return {**plain, "blur": round(sigma, 3), "label": f"blur{sigma:.2f}"}
    if name == "invert":
        angle = float(rng.uniform(-10, 10))  # an inversion with a small tilt: one label per draw
        return {**plain, "angle": round(angle, 2), "invert": True, "label": f"invert{angle:+.0f}"}
    if name == "elastic":
        seed, alpha = int(rng.integers(1 << 30)), float(rng.uniform(1.0, 2.0))
        return {**plain, "elastic": {"seed": seed, "alpha": round(alpha, 3)}, "label": f"elastic{seed % 1000:03d}"}
    if name in TEXT_TASKS:
        return {"kind": "text", "family": name, "label": name}
    raise ValueError(f"unknown zoo task family {name!r}")


TEXT_TASKS = ("rt-sentiment", "debate-party", "debate-moderator")  # see textzoo
TEXT_FAMILIES = {  # a text task's family: the adapt stage marks a new task outside the collection's
    "rt-sentiment": "sentiment", "debate-party": "party", "debate-moderator": "speaker role",  # zoo tasks
    # the adapt stage's new tasks (no zoo adapter trains on them): three of the zoo's families on
    # other texts, three families the zoo never saw (textzoo.load_task says what each is)
    "rt-sentiment-other": "sentiment", "convention-party": "party", "debate-ticket": "speaker role",
    "rt-subjectivity": "subjectivity", "headline-covid": "news period", "hamlet-speaker": "speaker identity",
}


def task_family(name: str) -> str:
    """The family of a task name: a text task's (``TEXT_FAMILIES``), else the name itself (the
    zoo's transform families are their own names)."""
    return TEXT_FAMILIES.get(name, name)
TRANSFORM_FAMILIES = ("rotate", "shift", "rotate-large", "scale", "blur", "invert", "elastic")
DEFAULT_TASKS = {"mlp": ["permutation", "partition"], "lora": ["rotate", "shift"],
                 "finetune": ["rotate", "shift"], "text-lora": list(TEXT_TASKS)}
ADAPTER_KINDS = ("lora", "text-lora")
BASE_KINDS = ("lora", "finetune", "text-lora")  # zoo kinds that write a base/ model


def normalize_spec(spec: dict) -> dict:
    """The zoo spec with the kind-dependent defaults the schema cannot express."""
    out = dict(spec)
    out.setdefault("tasks", DEFAULT_TASKS[out["kind"]])
    return out


def zoo_tasks(spec: dict) -> list[dict]:
    """The task of each model of a zoo collection, cycling through ``spec['tasks']``; tasks of a
    data set other than the digits name it (``dataset``, and ``data_path`` when given)."""
    rng = np.random.default_rng(spec["seed"])
    tasks = [make_task(spec["tasks"][i % len(spec["tasks"])], rng) for i in range(spec["count"])]
    return [with_dataset(t, spec) for t in tasks]


def with_dataset(task: dict, spec: dict) -> dict:
    """The task with the collection's data set recorded (digits, the default, records nothing)."""
    name = spec.get("dataset", "digits")
    if name == "digits":
        return task
    return {**task, "dataset": name, **({"data_path": str(spec["data_path"])} if spec.get("data_path") else {})}


def model_keys(spec: dict) -> list[str]:
    return [f"model-{i:03d}" for i in range(spec["count"])]


def is_zoo_model(folder: str | os.PathLike) -> bool:
    """Whether a model folder is one of the zoo's (a weightspace MLP, or an adapter with a zoo
    task): what the zoo evaluator can score."""
    from .layers import read_json

    cfg = read_json(folder, "config.json") or {}
    adapter = read_json(folder, "adapter_config.json") or {}
    return cfg.get("model_type") == "weightspace-mlp" or "weightspace_task" in adapter
