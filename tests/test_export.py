"""Exported adapters load in PEFT and apply exactly the reconstructed ΔW; bundles rebuild models."""

import numpy as np
import pytest
import torch

from weightspace import export, layers
from weightspace.evaluate import compression_table
from weightspace.project import coefficients, project_models, reconstruct
from weightspace.store import ModelStore, write_store
from weightspace.subspace import load_subspaces, run_group

F64 = torch.float64


def test_delta_lora_is_exact_for_any_core_shape():
    g = torch.Generator().manual_seed(0)
    m, n = 12, 9
    mu = torch.randn(m, 2, generator=g, dtype=F64) @ torch.randn(2, n, generator=g, dtype=F64)
    U_r = torch.linalg.qr(torch.randn(m, 5, generator=g, dtype=F64))[0]
    U_c = torch.linalg.qr(torch.randn(n, 5, generator=g, dtype=F64))[0]
    for kr, kc in [(3, 3), (2, 4), (4, 2)]:
        C = torch.randn(kr, kc, generator=g, dtype=F64)
        B, A = export.delta_lora(export.low_rank_factors(mu), C, U_r, U_c)
        assert B.shape[1] == A.shape[0] == 2 + min(kr, kc)
        torch.testing.assert_close(B @ A, reconstruct(C, mu, U_r, U_c), atol=1e-12, rtol=0)


def test_peft_applies_exactly_the_reconstructed_delta(tmp_path):
    peft = pytest.importorskip("peft", reason="peft is a test dependency (pyproject [test])")
    torch.manual_seed(0)

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = torch.nn.Linear(10, 16), torch.nn.Linear(16, 4)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x)))

    base = Tiny()
    g = torch.Generator().manual_seed(1)
    deltas = {}
    for name, (m, n) in {"fc1": (16, 10), "fc2": (4, 16)}.items():
        mu = torch.randn(m, 3, generator=g, dtype=F64) @ torch.randn(3, n, generator=g, dtype=F64) * 0.1
        U_r = torch.linalg.qr(torch.randn(m, 4, generator=g, dtype=F64))[0]
        U_c = torch.linalg.qr(torch.randn(n, 4, generator=g, dtype=F64))[0]
        C = torch.randn(4, 4, generator=g, dtype=F64) * 0.1
        deltas[name] = (reconstruct(C, mu, U_r, U_c), export.delta_lora(export.low_rank_factors(mu), C, U_r, U_c))
    r = export.write_peft_adapter(tmp_path / "adapter", {k: v[1] for k, v in deltas.items()}, "tiny")
    assert r == 7  # rank of fc1's mean (3) + k (4); fc2's smaller rank is zero-padded
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = peft.PeftModel.from_pretrained(base, str(tmp_path / "adapter"))
    merged = model.merge_and_unload()
    for name, (dW, _) in deltas.items():
        applied = merged.state_dict()[f"{name}.weight"].double() - before[f"{name}.weight"].double()
        torch.testing.assert_close(applied, dW, atol=2e-6, rtol=0)


def test_bundle_rebuilds_models_and_its_size_is_the_accounted_one(tmp_path):
    g = torch.Generator().manual_seed(0)
    paths = []
    for i in range(7):
        t = {"a.weight": torch.randn(20, 12, generator=g), "a.bias": torch.randn(20, generator=g),
             "b.weight": torch.randn(6, 20, generator=g)}
        write_store(tmp_path / f"m{i}.zarr", t.items(), {"model": f"m{i}"})
        paths.append(str(tmp_path / f"m{i}.zarr"))
    run_group(paths[:5], "full", 1, 0, str(tmp_path / "g.zarr"), max_k=8, center=True, gaussian_null=False,
              rotation_null=False, seed=0, device="cpu")
    subs, _ = load_subspaces([str(tmp_path / "g.zarr")])
    project_models(paths, subs, "full", str(tmp_path / "c.zarr"), [4], {})
    size = export.write_bundle(tmp_path / "bundle.safetensors", subs, str(tmp_path / "c.zarr"), paths, "full", k=4)
    rebuilt = export.load_from_bundle(tmp_path / "bundle.safetensors", "m6")  # a held-out model
    st = ModelStore(paths[6])
    for name, sub in subs.items():
        W = layers.read_target(st, [t for t in layers.targets(st, "full") if t.name == name][0])
        C = coefficients(W, sub.mean, sub.U_row[:, :4], sub.U_col[:, :4])
        torch.testing.assert_close(rebuilt[name], reconstruct(C, sub.mean, sub.U_row, sub.U_col), atol=1e-5, rtol=0)
    assert torch.equal(rebuilt["a.bias"], st.read("a.bias"))
    comp = compression_table(st, subs, "full", [4], n_models=7)
    row = comp.query("method == 'projected'").iloc[0]
    accounted = row["shared_bytes"] + 7 * row["per_model_bytes"]
    n_tensors = 3 * len(subs) + 7 * (len(subs) + 1)
    assert accounted <= size <= accounted + 8 + 120 * n_tensors  # safetensors header only
    with pytest.raises(KeyError, match="model nope is not in the bundle"):
        export.load_from_bundle(tmp_path / "bundle.safetensors", "nope")
