"""The built-in zoo: deterministic, real training, adapters that are needed."""

import json

import torch
from safetensors.torch import load_file

from weightspace import zoo, zoospec

SMALL = dict(kind="mlp", count=4, hidden=[16], shared_init=True, tasks=["permutation", "partition"],
             seed=0, steps=150, batch_size=64, lr=0.01, data_fraction=0.8)


def accuracy(weights, task, data, n_layers):
    x, y = zoo.task_inputs_targets(task, data.x_test, data.y_test)
    return float((zoo.mlp_forward(weights, x, n_layers).argmax(1) == y).float().mean())


def test_digits_are_scikit_learns():
    """The digits read from scikit-learn's file (no scikit-learn import) are load_digits' own."""
    from sklearn.datasets import load_digits

    data, target = zoo.digits_arrays()
    d = load_digits()
    assert data.shape == (1797, 64) and (data == d.data).all() and (target == d.target).all()


def test_mlp_zoo_trains_deterministically(tmp_path):
    data = zoo.load_digits(0)
    tasks = zoospec.zoo_tasks(SMALL)
    a = zoo.train_mlps(SMALL, data, tasks)
    b = zoo.train_mlps(SMALL, data, tasks)
    for sa, sb in zip(a, b):
        for k in sa:
            assert torch.equal(sa[k], sb[k])
    accs = [accuracy(s, t, data, 2) for s, t in zip(a, tasks)]
    assert min(accs) > 0.7, accs


def test_shared_vs_independent_init():
    data = zoo.load_digits(0)
    tasks = zoospec.zoo_tasks(SMALL)
    shared = zoo.train_mlps(dict(SMALL, steps=1, lr=1e-9), data, tasks)
    indep = zoo.train_mlps(dict(SMALL, steps=1, lr=1e-9, shared_init=False), data, tasks)
    assert torch.allclose(shared[0]["fc1.weight"], shared[1]["fc1.weight"], atol=1e-6)
    assert not torch.allclose(indep[0]["fc1.weight"], indep[1]["fc1.weight"], atol=1e-2)


def test_lora_zoo_folders_in_peft_layout_and_adapters_needed(tmp_path):
    spec = zoospec.normalize_spec(dict(kind="lora", count=3, hidden=[32], shared_init=False, seed=1,
                                   steps=200, base_steps=300, batch_size=64, lr=0.01, data_fraction=0.8,
                                   rank=4, alpha=8, target_modules=["fc1"]))
    out = tmp_path / "zoo"
    zoo.build_zoo(spec, out)
    cfg = json.loads((out / "model-000" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 4 and cfg["lora_alpha"] == 8
    assert cfg["target_modules"] == ["fc1"]
    ad = load_file(str(out / "model-000" / "adapter_model.safetensors"))
    assert ad["base_model.model.fc1.lora_A.weight"].shape == (4, 64)
    assert ad["base_model.model.fc1.lora_B.weight"].shape == (32, 4)
    base = load_file(str(out / "base" / "model.safetensors"))
    data = zoo.load_digits(0)
    task = cfg["weightspace_task"]
    merged = dict(base)
    merged["fc1.weight"] = base["fc1.weight"] + 2.0 * ad["base_model.model.fc1.lora_B.weight"] @ ad[
        "base_model.model.fc1.lora_A.weight"]
    assert accuracy(merged, task, data, 2) > accuracy(base, task, data, 2) + 0.2
