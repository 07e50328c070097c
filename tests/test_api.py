"""weightspace.api (the library without the workflow) against the subspace stage, and
docs/api.md run as written."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from weightspace import api
from weightspace.store import write_store
from weightspace.bank import write_bank
from weightspace.project import project_models
from weightspace.subspace import load_subspaces, run_group

ROOT = Path(__file__).resolve().parents[1]


def models(N=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    shared = torch.randn(7, 2, generator=g)
    return {f"m{i}": {"fc.weight": shared @ torch.randn(2, 5, generator=g) + 0.01 * torch.randn(7, 5, generator=g),
                      "conv.weight": torch.randn(4, 3, 2, 2, generator=g), "fc.bias": torch.randn(7, generator=g)}
            for i in range(N)}


def test_fit_equals_the_subspace_stage(tmp_path):
    ms = models()
    sub = api.fit(ms, max_k=4)
    assert sorted(sub) == ["conv.weight", "fc.weight"]  # 1-D tensors are not decomposed
    paths = []
    for name, sd in ms.items():
        write_store(tmp_path / f"{name}.zarr", sd.items(), {"model": name})
        paths.append(str(tmp_path / f"{name}.zarr"))
    run_group(paths, "full", 1, 0, str(tmp_path / "g.zarr"), max_k=4, center=True, gaussian_null=False,
              rotation_null=False, seed=0, device="cpu")
    stage, _ = load_subspaces([str(tmp_path / "g.zarr")])
    for name, b in sub.items():  # the stage stores its results in float32
        for key in ("mean", "U_row", "U_col"):
            torch.testing.assert_close(getattr(b, key), getattr(stage[name], key), rtol=0, atol=1e-6)
    (tmp_path / "c" / "subspace" / "full").mkdir(parents=True)
    (tmp_path / "g.zarr").rename(tmp_path / "c" / "subspace" / "full" / "group-0.zarr")
    loaded = api.load_run(tmp_path, "c")
    torch.testing.assert_close(loaded["fc.weight"].U_row, sub["fc.weight"].U_row, rtol=0, atol=1e-6)
    assert loaded["conv.weight"].shape == (4, 12)  # a run stores matrices: conv kernels as out × in·kh·kw
    # the run's spectrum comes along: explained variance as fit computes it
    assert loaded["fc.weight"].explained_variance(2) == pytest.approx(sub["fc.weight"].explained_variance(2), abs=1e-6)
    assert "fc.weight" in repr(loaded) and "7×5" in repr(loaded["fc.weight"])
    with pytest.raises(FileNotFoundError, match="no subspace of other"):
        api.load_run(tmp_path, "other")


def test_project_and_reconstruct():
    ms = models(N=4)
    sub = api.fit(ms, max_k=8)
    C = sub.project(ms["m1"], k=3)
    assert C["fc.weight"].shape == (3, 3) and C["conv.weight"].shape == (3, 3)
    back = sub.reconstruct(C)
    for name, b in sub.items():  # μ + P_r (W − μ) P_c with the leading 3 directions, in the tensor's shape
        W = ms["m1"][name].double().reshape(b.shape[0], -1)
        Pr, Pc = b.U_row[:, :3] @ b.U_row[:, :3].T, b.U_col[:, :3] @ b.U_col[:, :3].T
        assert back[name].shape == ms["m1"][name].shape
        torch.testing.assert_close(back[name].reshape(W.shape), b.mean + Pr @ (W - b.mean) @ Pc, rtol=0, atol=1e-10)
    # every direction of fc.weight (7×5) is stored at max_k = 8: reconstruction is exact
    full = sub.reconstruct(sub.project(ms["m1"], k=8))["fc.weight"]
    torch.testing.assert_close(full, ms["m1"]["fc.weight"].double(), rtol=0, atol=1e-10)
    assert sub["fc.weight"].explained_variance(2) > 0.99  # the planted rank-2 row space



def test_compress_gives_a_state_dict_a_model_loads():
    """compress: every tensor of the state dict in its own dtype and shape (biases kept as they
    are), the matrices replaced by their reconstructions at k; a module loads it as is."""
    ms = {n: {t: v.to(torch.bfloat16) if t == "fc.weight" else v for t, v in sd.items()} for n, sd in models(N=5).items()}
    sub = api.fit(ms, max_k=8)
    out = sub.compress(ms["m2"], k=3)
    assert list(out) == list(ms["m2"]) and all(out[t].dtype == ms["m2"][t].dtype for t in out)
    assert torch.equal(out["fc.bias"], ms["m2"]["fc.bias"])
    back = sub.reconstruct(sub.project(ms["m2"], k=3))
    torch.testing.assert_close(out["conv.weight"], back["conv.weight"].float())
    torch.testing.assert_close(out["fc.weight"], back["fc.weight"].to(torch.bfloat16))
    module = torch.nn.Module()
    module.fc = torch.nn.Linear(5, 7, dtype=torch.bfloat16)
    module.conv = torch.nn.Conv2d(3, 4, 2, bias=False)
    module.fc.bias = torch.nn.Parameter(torch.zeros(7))
    module.load_state_dict(out)


def test_bad_inputs_are_named():
    ms = models(N=3)
    with pytest.raises(ValueError, match="at least two models"):
        api.fit({"m0": ms["m0"]})
    ms["m2"]["fc.weight"] = torch.randn(7, 6)
    with pytest.raises(ValueError, match=r"fc.weight of model m2: shape \(7, 6\)"):
        api.fit(ms)
    sub = api.fit(models(N=3))
    with pytest.raises(KeyError, match="no tensor 'conv.weight'"):
        sub.project({"fc.weight": torch.randn(7, 5)}, k=2)


def code_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, re.S)


def test_docs_api_runs_as_written(tmp_path, monkeypatch):
    """Every python block of docs/api.md, in order, in one namespace; the finished-run part
    reads a small run made here by the stage functions in the layout the workflow writes."""
    ms = models()
    run = tmp_path / "results" / "digits-mlp-shared"
    (run / "subspace" / "full").mkdir(parents=True)
    paths = []
    for name, sd in ms.items():
        write_store(tmp_path / f"{name}.zarr", sd.items(), {"model": name})
        paths.append(str(tmp_path / f"{name}.zarr"))
    run_group(paths, "full", 1, 0, str(run / "subspace" / "full" / "group-0.zarr"), max_k=4, center=True,
              gaussian_null=False, rotation_null=False, seed=0, device="cpu")
    subs, _ = load_subspaces([str(run / "subspace" / "full" / "group-0.zarr")])
    project_models(paths, subs, "full", str(run / "project" / "coefficients.zarr"), [4], {})
    from weightspace.spectra import spectra_table

    spectra_table([str(run / "subspace" / "full" / "group-0.zarr")]).to_parquet(run / "subspace" / "full" / "spectra.parquet")
    write_bank(paths, subs, str(run / "project" / "coefficients.zarr"), "full", 4, run / "bank" / "full" / "k4")
    monkeypatch.chdir(tmp_path)
    blocks = code_blocks((ROOT / "docs" / "api.md").read_text())
    assert len(blocks) >= 2
    namespace = {}
    for block in blocks:
        exec(compile(block, "docs/api.md", "exec"), namespace)
    assert "coeffs" in namespace and "hat" in namespace
    assert float((namespace["y"][1] - namespace["own"]).abs().max()) < 1e-10  # the bank serves model-5 on row 1
    assert namespace["saved"].models == list(ms) and namespace["saved"].k == 4
    assert namespace["table"].set_index("target").loc["fc.weight", "shared"]  # the planted shared row space
    assert (tmp_path / "spectra.png").stat().st_size > 10_000 and (tmp_path / "my-subspace" / "subspaces.json").exists()
    assert namespace["run"].tables["spectra"].equals(pd.read_parquet(run / "subspace" / "full" / "spectra.parquet"))


def test_a_bank_of_fitted_models_serves_each_like_its_reconstruction():
    ms = models(N=5)
    sub = api.fit(ms, max_k=8)
    bank = sub.bank(ms, k=3)
    assert set(bank.kept) == {"fc.bias"} and bank.matrices["conv.weight"].coef.shape == (5, 3, 3)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(5, 7)
            self.conv = torch.nn.Conv2d(3, 4, 2)

        def forward(self, x, img):
            return self.fc(x), self.conv(img)

    served = api.attach(bank, Net().double())
    g = torch.Generator().manual_seed(1)
    x, img = torch.randn(5, 5, generator=g, dtype=torch.float64), torch.randn(5, 3, 4, 4, generator=g, dtype=torch.float64)
    y, z = served(x, img, model_ids=list(ms))
    for i, (name, sd) in enumerate(ms.items()):
        hat = sub.reconstruct(sub.project(sd, k=3))
        torch.testing.assert_close(y[i], x[i] @ hat["fc.weight"].T + sd["fc.bias"].double(), rtol=0, atol=1e-10)
        torch.testing.assert_close(z[i], torch.nn.functional.conv2d(img[i:i + 1], hat["conv.weight"],
                                                                    bank.kept["conv.bias"][i] if "conv.bias" in bank.kept
                                                                    else served.model.conv.bias)[0],
                                   rtol=0, atol=1e-10)


def test_sharing_test_equals_the_stage_and_models_load_from_folders(tmp_path):
    """api.sharing_test gives the stage's numbers (run_group + sharing_table: statistic, draws,
    p, q, call) on the same models; fit and sharing_test take model folders as well as state
    dicts (safetensors read by load_models), with equal results."""
    from safetensors.torch import save_file

    from weightspace.spectra import sharing_table

    ms = models(N=6)
    paths = []
    for name, sd in ms.items():
        write_store(tmp_path / f"{name}.zarr", sd.items(), {"model": name})
        paths.append(str(tmp_path / f"{name}.zarr"))
        (tmp_path / "folders" / name).mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "folders" / name / "model.safetensors"))
    run_group(paths, "full", 1, 0, str(tmp_path / "g.zarr"), max_k=4, center=True, gaussian_null=False,
              rotation_null=True, seed=0, device="cpu", null_draws=99, test_k=16)
    stage = sharing_table([str(tmp_path / "g.zarr")], 0.05, margin=0.05).set_index("target")
    table = api.sharing_test(ms, draws=99, K=16, margin=0.05).set_index("target")
    assert sorted(table.index) == sorted(stage.index) == ["conv.weight", "fc.weight"]
    for col in ("statistic", "null_mean", "p", "q"):
        np.testing.assert_allclose(table[col], stage.loc[table.index, col], rtol=1e-6)
    assert (table["draws"] == stage.loc[table.index, "draws"]).all()
    assert list(table["shared"]) == list(stage.loc[table.index, "shared"].astype(bool))
    assert table.attrs["verdict"] in ("shared", "not shared")
    loaded = api.load_models(sorted((tmp_path / "folders").iterdir()))
    assert sorted(loaded) == sorted(ms)
    a, b = api.fit(ms, max_k=4), api.fit([str(p) for p in sorted((tmp_path / "folders").iterdir())], max_k=4)
    torch.testing.assert_close(a["fc.weight"].U_row, b["fc.weight"].U_row, rtol=0, atol=0)


def test_a_subspace_saves_and_loads_without_pickle(tmp_path):
    sub = api.fit(models(N=4), max_k=3)
    sub.save(tmp_path / "s")
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["subspaces.json", "subspaces.safetensors"]
    back = api.load(tmp_path / "s")
    assert sorted(back) == sorted(sub) and back["conv.weight"].shape == (4, 3, 2, 2)
    for name in sub:
        for key in ("mean", "U_row", "U_col", "eig_row"):
            assert torch.equal(getattr(back[name], key), getattr(sub[name], key))
    assert back["fc.weight"].explained_variance(2) == sub["fc.weight"].explained_variance(2)


def test_lora_delta_is_pefts_delta_weight(tmp_path):
    """A real PEFT LoRA (rsLoRA too) saved by save_pretrained: lora_delta's ΔW per module equals
    PEFT's own get_delta_weight."""
    peft = pytest.importorskip("peft")

    for rslora in (False, True):
        torch.manual_seed(0)
        base = torch.nn.Sequential()
        base.add_module("fc1", torch.nn.Linear(6, 8))
        base.add_module("fc2", torch.nn.Linear(8, 3))
        cfg = peft.LoraConfig(r=2, lora_alpha=4, target_modules=["fc1", "fc2"], use_rslora=rslora, init_lora_weights=False)
        model = peft.get_peft_model(base, cfg)
        folder = tmp_path / f"adapter-{rslora}"
        model.save_pretrained(folder)
        delta = api.lora_delta(folder)
        assert sorted(delta) == ["base_model.model.fc1", "base_model.model.fc2"]
        for name in ("fc1", "fc2"):
            want = getattr(model.base_model.model, name).get_delta_weight("default").double()
            torch.testing.assert_close(delta[f"base_model.model.{name}"], want, rtol=1e-6, atol=1e-7)
