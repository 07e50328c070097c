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


def test_coefficient_lora_is_exact_for_any_core_shape():
    g = torch.Generator().manual_seed(0)
    m, n = 12, 9
    U_r = torch.linalg.qr(torch.randn(m, 5, generator=g, dtype=F64))[0]
    U_c = torch.linalg.qr(torch.randn(n, 5, generator=g, dtype=F64))[0]
    for kr, kc in [(3, 3), (2, 4), (4, 2)]:
        C = torch.randn(kr, kc, generator=g, dtype=F64)
        B, A = export.coefficient_lora(C, U_r, U_c)
        assert B.shape[1] == A.shape[0] == min(kr, kc)
        torch.testing.assert_close(B @ A, U_r[:, :kr] @ C @ U_c[:, :kc].T, atol=1e-12, rtol=0)


@pytest.mark.parametrize("k", [1, 4])  # below and above the adapters' rank 2
def test_delta_export_is_two_peft_adapters_that_add_exactly_the_reconstruction(tmp_path, k):
    """The delta export: the collection's shared adapter + each model's own adapter of rank
    min(k, r), configs written by LoraConfig with no unknown keys and the base path relative to
    the adapter; loaded together by PEFT they add exactly μ + U_r C U_cᵀ (forward and merged)."""
    import json

    from peft import LoraConfig

    import zarr
    from test_stages import lora_stores

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(6, 5)

        def forward(self, x):
            return self.fc1(x)

    paths = lora_stores(tmp_path, 9)
    run_group(paths[:7], "delta", 1, 0, str(tmp_path / "g.zarr"), max_k=4, center=True, gaussian_null=False,
              rotation_null=False, seed=0, device="cpu")
    subs, _ = load_subspaces([str(tmp_path / "g.zarr")])
    project_models(paths, subs, "delta", str(tmp_path / "c.zarr"), [k], {})
    (tmp_path / "base").mkdir()
    out = tmp_path / "export"
    rows = export.export_models(paths, subs, str(tmp_path / "c.zarr"), "delta", k, out, base=str(tmp_path / "base"))
    assert [r["rank"] for r in rows] == [min(k, 2)] * 9  # never above the adapters' own rank
    for folder in (out / "shared", out / "models" / "a8"):
        cfg = json.loads((folder / "adapter_config.json").read_text())
        assert set(cfg) <= set(LoraConfig().to_dict()) and cfg["lora_alpha"] == cfg["r"]
        assert (folder / cfg["base_model_name_or_path"]).resolve() == (tmp_path / "base").resolve()
    sizes = export.export_table(rows)
    assert (sizes["export_bytes"] == sizes["original_bytes"] * min(k, 2) / 2).all()  # rank min(k, r) of r
    sub = subs["base_model.model.fc1"]
    for key in ("a0", "a8"):  # a basis and a held-out model
        coeffs = zarr.open_group(str(tmp_path / "c.zarr"), mode="r")["base_model.model.fc1"]
        C = torch.from_numpy(np.asarray(coeffs[int(key[1:])])[:k, :k]).double()
        want = reconstruct(C, sub.mean, sub.U_row, sub.U_col)
        torch.manual_seed(0)
        base = Tiny().double()
        before = base.fc1.weight.detach().clone()
        model = export.load_delta_export(base, out, key)
        assert sorted(model.active_adapters) == ["model", "shared"]
        x = torch.randn(3, 6, dtype=F64)
        torch.testing.assert_close(model(x), x @ (before + want).T + base.fc1.bias, atol=1e-6, rtol=0)
        merged = model.merge_and_unload()
        torch.testing.assert_close(merged.fc1.weight.detach() - before, want, atol=1e-6, rtol=0)


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
    export.write_bundle(tmp_path / "again.safetensors", subs, str(tmp_path / "c.zarr"), paths, "full", k=4)
    assert (tmp_path / "again.safetensors").read_bytes() == (tmp_path / "bundle.safetensors").read_bytes()


def test_load_delta_export_refuses_a_folder_without_safetensors(tmp_path):
    """PEFT falls back to adapter_model.bin (a pickle); the loader refuses before PEFT looks."""
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "adapter_model.bin").write_bytes(b"not loaded")
    with pytest.raises(FileNotFoundError, match="model org--a: no adapter_model.safetensors"):
        export.load_delta_export(torch.nn.Linear(2, 2), tmp_path, "org--a")
