"""End to end: the Snakemake workflow on a tiny zoo in a temp directory."""

import base64
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]

TINY = yaml.safe_load((ROOT / ".test" / "config" / "config.yaml").read_text())  # the config CI runs

pytestmark = pytest.mark.e2e


def snakemake(workdir, *args, config="config.yaml", check=True, **kwargs):
    cmd = [*SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / config), "--cores", "2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a (dry) run."""
    counts = {}
    if "Job stats:" not in output:
        return counts
    for line in output.split("Job stats:")[1].splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m:
            break
        counts[m[1]] = int(m[2])
    return counts


def write_config(workdir, config, name="config.yaml"):
    (workdir / name).write_text(yaml.safe_dump(config))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    write_config(workdir, TINY)
    snakemake(workdir)
    return workdir


def test_outputs_exist_and_are_sane(finished):
    res = finished / "results"
    table = pd.read_csv(res / "tiny-shared" / "collection.tsv", sep="\t")
    assert len(table) == 12 and (table["split"] == "heldout").sum() == 3
    assert table["revision"].str.fullmatch(r"[0-9a-f]{40}").all()
    assert len(list((res / "tiny-shared" / "weights").glob("*.zarr"))) == 12
    m = pd.read_parquet(res / "tiny-shared" / "evaluate" / "full" / "metrics.parquet")
    assert set(m["method"]) == {"original", "projected", "mean", "random", "svd"}
    assert m["model"].nunique() == 12
    acc = m.groupby(["split", "method", "k"])["accuracy"].mean()
    orig = m[m["method"] == "original"].groupby("split")["accuracy"].mean()
    assert orig.min() > 0.8
    # shared-init zoo: held-out accuracy at k=16 well above the random subspace
    assert acc["heldout", "projected", 16] > acc["heldout", "random", 16] + 0.2
    assert acc["heldout", "projected", 16] > acc["heldout", "mean", 16] + 0.2
    # errors fall with k on basis models; full-size subspace never worse than mean
    err = m[(m["split"] == "basis") & (m["method"] == "projected")].groupby("k")["rel_error_centered"].mean()
    assert err[1] > err[4] > err[16]
    # memory: compressed bytes below the originals at small k
    comp = pd.read_csv(res / "tiny-shared" / "evaluate" / "full" / "compression.csv")
    assert comp.query("method == 'projected' and k == 4")["compression"].item() < 1
    # spectra: every mode's eigenvalues, data and both nulls
    spectra = pd.read_parquet(res / "tiny-shared" / "subspace" / "full" / "spectra.parquet")
    assert set(spectra["source"]) == {"data", "Gaussian null", "rotation null"}
    assert set(spectra["target"]) == {"fc1.weight", "fc2.weight"}
    for png in ["spectra_vs_nulls", "accuracy_vs_k", "accuracy_vs_bytes"]:
        assert (res / "tiny-shared" / "figures" / "full" / f"{png}.png").stat().st_size > 10_000
    assert (res / "figures" / "overview_sharing.png").stat().st_size > 10_000
    # the verdict: one row per collection and view; shared init and LoRA deltas are shared
    summary = pd.read_csv(res / "summary.csv").set_index(["collection", "view"])
    assert set(summary.index) == {("tiny-shared", "full"), ("tiny-lora", "factors"), ("tiny-lora", "delta"),
                                  ("tiny-mnist", "full")}
    assert summary.loc[("tiny-shared", "full"), "verdict"] == "shared"
    assert summary.loc[("tiny-lora", "delta"), "verdict"] == "shared"
    held_mean = m[(m["split"] == "heldout") & (m["method"] == "mean")]["rel_error"].mean()
    assert summary.loc[("tiny-shared", "full"), "mean_only_error_heldout"] == pytest.approx(held_mean)
    sharing = pd.read_csv(res / "tiny-shared" / "subspace" / "full" / "sharing.csv")
    assert summary.loc[("tiny-shared", "full"), "matrices_shared"] == sharing["shared"].sum() == 2
    methods = pd.read_csv(res / "methods.csv")
    assert {"projected", "mean", "random", "svd", "original"} <= set(methods["method"])
    html = (res / "methods.html").read_text()  # rendered for the report, a table per collection and view
    assert "<h4>tiny-shared [full]</h4>" in html and html.count("<table") == len(summary)
    # the basis-size sweep: every size, the last one the whole basis
    sweep = pd.read_csv(res / "tiny-shared" / "sweep" / "full" / "basis_size.csv")
    assert list(sweep["n_basis"]) == [2, 4, 9]
    assert sweep["heldout_error"].iloc[-1] < sweep["heldout_mean_only_error"].iloc[-1]
    # N = all is the subspace stage's own test: its median excess is the stage's (sharing.csv)
    stage = (sharing["statistic"] - sharing["null_mean"]).median()
    assert sweep["median_excess"].iloc[-1] == pytest.approx(stage, rel=1e-9)
    assert (res / "tiny-shared" / "figures" / "full" / "error_vs_basis_size.png").stat().st_size > 10_000


def test_transfer_stage_and_a_collection_onto_itself(finished):
    """The transfer pairs' outputs; and a collection's subspace against its own models (what
    the stage computes for a pair, with A = B) equals its own projection: the evaluate stage's
    projected errors and accuracies, and captured energy equal to its own top-k (ratio 1)."""
    from weightspace import transfer
    from weightspace.collection import accepted_stores
    from weightspace.evaluators.registry import make_evaluator
    from weightspace.store import ModelStore
    from weightspace.subspace import load_subspaces

    res = finished / "results"
    summary = pd.read_csv(res / "transfer" / "summary.csv").set_index(["a", "b"])
    assert set(summary.index) == {("tiny-shared", "tiny-mnist"), ("tiny-mnist", "tiny-shared")}
    assert (summary["rows_tested"] > 0).all() and summary["verdict"].isin(["transfers", "does not transfer"]).all()
    energy = pd.read_csv(res / "transfer" / "tiny-shared~tiny-mnist" / "energy.csv")
    tested = energy[energy["tested"]]
    assert (tested["captured"] <= tested["own"] + 1e-9).all() and (tested["p"] >= 1 / 200).all()
    proj = pd.read_parquet(res / "transfer" / "tiny-shared~tiny-mnist" / "projection.parquet")
    assert set(proj["method"]) == {"original", *transfer.METHODS} and proj["model"].nunique() == 6
    assert (res / "figures" / "transfer_matrix.png").stat().st_size > 10_000
    assert (res / "transfer" / "tiny-mnist~tiny-shared" / "transfer.png").stat().st_size > 10_000

    subs, basis = load_subspaces(sorted(str(p) for p in (res / "tiny-shared" / "subspace" / "full").glob("group-*.zarr")))
    paths = accepted_stores(sorted(str(p) for p in (res / "tiny-shared" / "weights").glob("*.zarr")),
                            str(res / "tiny-shared" / "screen.tsv"))
    stores = [ModelStore(p) for p in paths]
    splits = dict(pd.read_csv(res / "tiny-shared" / "collection.tsv", sep="\t")[["key", "split"]].values)
    ev = make_evaluator("zoo", data_seed=0, base_folder=None)
    own = transfer.projection_table(stores, subs, subs, "full", [1, 4, 16], ev, splits)
    m = pd.read_parquet(res / "tiny-shared" / "evaluate" / "full" / "metrics.parquet")
    for method in ("transfer", "transfer_a_mean"):
        a = own[own["method"] == method].set_index(["model", "k"])[["rel_error", "accuracy"]]
        b = own[own["method"] == "own"].set_index(["model", "k"])[["rel_error", "accuracy"]]
        pd.testing.assert_frame_equal(a, b, atol=1e-9, rtol=0)
    ref = m[(m["method"] == "projected") & m["k"].isin([1, 4, 16])].set_index(["model", "k"])[["rel_error", "accuracy"]]
    got = own[own["method"] == "own"].set_index(["model", "k"])[["rel_error", "accuracy"]]
    pd.testing.assert_frame_equal(got.sort_index(), ref.sort_index(), atol=1e-6, rtol=0)
    comps = transfer.meeting_modes(subs, subs)
    grams = transfer.centred_grams([s for s in stores if s.key in set(basis)], subs, "full",
                                   [(c["b"], c["mode"]) for c in comps])
    e = transfer.energy_table(subs, subs, grams, comps, 4, 19, 0, 0.05, 0.05, 0.5)
    t = e[e["tested"]]
    assert len(t) > 0
    assert np.allclose(t["captured"], t["own"], atol=1e-9) and np.allclose(t["overlap"], 1.0)


def test_alignment_stage(finished):
    """The align stage on the zoo: every pair and metric, features that are the models' own
    activations, the null near chance, matrices and figures."""
    import zarr

    from weightspace import zoo
    from weightspace.core.align import METRICS

    res = finished / "results" / "tiny-shared"
    t = pd.read_parquet(res / "align" / "full" / "alignment.parquet")
    assert set(t["metric"]) == set(METRICS)
    assert set(t["variant"]) == {"original", "projected", "original~projected", "null"}
    pairs = t[t.variant == "original"].groupby("metric").size()  # cycle k-NN and CKNNA: both directions
    assert pairs.to_dict() == {m: 12 * 11 // (2 if m in ("mutual_knn", "cka", "cka_rbf", "unbiased_cka", "svcca") else 1)
                               for m in METRICS}
    means = t.groupby(["variant", "metric"])["score"].mean()
    for metric in ("mutual_knn", "cka", "cknna"):
        assert means["original", metric] > means["null", metric] + 0.2
    assert means["null", "mutual_knn"] < 0.1  # chance is about k/n = 10/499
    # cached features: model-000's first hidden layer equals its own activations
    feats = zarr.open_group(str(res / "align" / "full" / "features.zarr"), mode="r")
    from safetensors.torch import load_file
    w = load_file(res / "zoo" / "model-000" / "model.safetensors")
    x = zoo.load_digits(0).x_test[:500]
    h = torch.relu(x @ w["fc1.weight"].T + w["fc1.bias"])
    assert torch.allclose(torch.from_numpy(feats["original/model-000/layer-00"][...]), h, atol=1e-5)
    M = pd.read_parquet(res / "align" / "full" / "matrices" / "mutual_knn_original.parquet").set_index("model")
    assert M.shape == (12, 12) and (M.values.diagonal() == 1).all()
    for png in ["alignment_heatmap", "alignment_vs_weights", "alignment_projection"]:
        assert (res / "figures" / "full" / f"{png}.png").stat().st_size > 10_000


def test_alignment_across_collections(finished):
    """align.across: the MLPs against the LoRA-adapted MLPs, and the adapters against their own
    base model (tiny-lora:base), on the same probe digits; the base's stored features are its
    own activations; every pair present, the across mean above the shuffled-probe null."""
    import zarr
    from safetensors.torch import load_file

    from weightspace import zoo

    res = finished / "results" / "across"
    s = pd.read_csv(res / "tiny-shared~tiny-lora" / "summary.csv").set_index("metric")
    both = s.index.isin(["cycle_knn", "cknna"])  # asymmetric: within pairs in both directions
    assert (s["across_pairs"] == 10 * 8).all()
    assert (s["within_a_pairs"] == np.where(both, 90, 45)).all() and (s["within_b_pairs"] == np.where(both, 56, 28)).all()
    for metric in ("mutual_knn", "cka"):
        assert s.loc[metric, "across"] > s.loc[metric, "null"] + 0.1, s
    base = pd.read_csv(res / "tiny-lora~tiny-lora@base" / "summary.csv").set_index("metric")
    assert (base["across_pairs"] == 8).all() and "within_b" not in base
    assert (res / "tiny-lora~tiny-lora@base" / "alignment_heatmap.png").stat().st_size > 10_000
    feats = zarr.open_group(str(finished / "results" / "tiny-lora" / "align" / "factors" / "features.zarr"), mode="r")
    w = load_file(finished / "results" / "tiny-lora" / "zoo" / "base" / "model.safetensors")
    x = zoo.load_digits(0).x_test[:500]
    h = torch.relu(x @ w["fc1.weight"].T + w["fc1.bias"])
    assert torch.allclose(torch.from_numpy(feats["base/base/layer-00"][...]), h, atol=1e-5)
    assert feats.attrs["probe"] == zarr.open_group(
        str(finished / "results" / "tiny-shared" / "align" / "full" / "features.zarr"), mode="r").attrs["probe"]


def test_lora_collection_both_views(finished):
    res = finished / "results" / "tiny-lora"
    for view in ("factors", "delta"):
        m = pd.read_parquet(res / "evaluate" / view / "metrics.parquet")
        acc = m.groupby("method")["accuracy"].mean()
        assert acc["original"] > acc["base_only"] + 0.2  # the adapters do something
        assert {"projected", "mean", "random", "svd", "base_only"} <= set(m["method"])
    spectra = pd.read_parquet(res / "subspace" / "delta" / "spectra.parquet")
    assert set(spectra["target"]) == {"base_model.model.fc1"}
    # delta view at full k reconstructs the basis adapters exactly: 32×64 core, max_k 16 => not full;
    # but the factors view of lora_A (4×64) keeps all 4 row directions
    f = pd.read_parquet(res / "evaluate" / "factors" / "metrics.parquet")
    assert (f["rel_error"] >= 0).all()


def test_exported_models_reproduce_the_evaluated_accuracy(finished):
    """What the export writes (a full model; a PEFT adapter applied as PEFT would, at scale
    lora_alpha / r) scores exactly what the evaluate stage reported for the projection at k."""
    import json

    from safetensors.torch import load_file

    from weightspace import zoo

    data = zoo.load_digits(0)
    res = finished / "results"

    def acc(weights, task, n_layers):
        x, y = zoo.task_inputs_targets(task, data.x_test, data.y_test)
        return float((zoo.mlp_forward(weights, x.double(), n_layers).argmax(1) == y).double().mean())

    m = pd.read_parquet(res / "tiny-shared" / "evaluate" / "full" / "metrics.parquet")
    folder = res / "tiny-shared" / "export" / "full" / "k4" / "models" / "model-010"
    cfg = json.loads((folder / "config.json").read_text())
    got = acc({k: v.double() for k, v in load_file(str(folder / "model.safetensors")).items()},
              cfg["weightspace_task"], 2)
    want = m.query("model == 'model-010' and method == 'projected' and k == 4")["accuracy"].item()
    assert abs(got - want) <= 1 / len(data.y_test)

    # the delta view's export: the collection's mean adapter + the model's rank-k adapter, loaded
    # together by PEFT (relative base path resolved from the export folder)
    import torch

    from weightspace.export import load_delta_export

    m = pd.read_parquet(res / "tiny-lora" / "evaluate" / "delta" / "metrics.parquet")
    out = res / "tiny-lora" / "export" / "delta" / "k4"
    cfg = json.loads((out / "models" / "model-007" / "adapter_config.json").read_text())
    assert cfg["lora_alpha"] == cfg["r"] == 4 and "weightspace_task" not in cfg  # rank min(k, r)
    base = zoo.MLP.from_folder(out / "models" / "model-007" / cfg["base_model_name_or_path"], torch.float64)
    w = {k: v.double() for k, v in load_delta_export(base, out, "model-007").merge_and_unload().state_dict().items()}
    task = json.loads((res / "tiny-lora" / "zoo" / "model-007" / "adapter_config.json").read_text())["weightspace_task"]
    want = m.query("model == 'model-007' and method == 'projected' and k == 4")["accuracy"].item()
    assert abs(acc(w, task, 2) - want) <= 1 / len(data.y_test)
    assert (out / "bundle.safetensors").stat().st_size > 0
    sizes = pd.read_csv(res / "tiny-lora" / "export" / "delta" / "k4-sizes.csv")
    # at k = r = 4 each model's own adapter has the tensor bytes of its original; the shared one is extra
    assert (sizes["export_bytes"] == sizes["original_bytes"]).all() and (sizes["shared_export_bytes"] > 0).all()


def test_bank_rule_and_the_evaluate_bank_path(finished):
    """The bank rule's file serves each model like its own projected weights (full view: the MLP
    skeleton; adapters: the base, factors and delta), and evaluate's table through the bank equals
    the per-model path's, every row and column, for all three views."""
    import json

    from weightspace import zoo
    from weightspace.bank import attach, load_bank
    from weightspace.collection import accepted_stores
    from weightspace.evaluate import evaluate_models
    from weightspace.evaluators.registry import make_evaluator
    from weightspace.subspace import load_subspaces

    res = finished / "results"
    data = zoo.load_digits(0)
    for c, view in (("tiny-shared", "full"), ("tiny-lora", "factors"), ("tiny-lora", "delta")):
        base = str(res / c / "zoo" / "base") if view != "full" else None
        ev = make_evaluator("zoo", data_seed=0, base_folder=base)
        stores = accepted_stores(sorted(map(str, (res / c / "weights").glob("*.zarr"))), str(res / c / "screen.tsv"))
        subs, _ = load_subspaces(sorted(map(str, (res / c / "subspace" / view).glob("group-*.zarr"))))
        coef = str(res / c / "project" / view / "coefficients.zarr")
        ks = [1, 4, 16]
        banked = evaluate_models(stores, subs, coef, view, ks, ev, {}, use_bank=True)
        plain = evaluate_models(stores, subs, coef, view, ks, ev, {}, use_bank=False)
        pd.testing.assert_frame_equal(banked, plain)
        bank = load_bank(res / c / "bank" / view / "k4")
        assert bank.models == [p.split("/")[-1].removesuffix(".zarr") for p in stores] and bank.view == view
        weights = ev.base_weights()
        skeleton = zoo.MLP.from_weights(weights, torch.float64) if weights else zoo.MLP([64, 32, 10]).double()
        served = attach(bank, skeleton)
        x = data.x_test[:50].double()
        ids = torch.arange(50) % len(bank)
        with torch.no_grad():
            out = served(x, model_ids=ids)
        for i in range(len(bank)):
            own = zoo.mlp_forward(bank.to(torch.float64).weights(i, weights), x[ids == i], 2)
            torch.testing.assert_close(out[ids == i], own, rtol=1e-6, atol=1e-6)  # the file is float32
        index = json.loads((res / c / "bank" / view / "k4" / "index.json").read_text())
        assert index["k"] == 4 and len(index["configs"]) == len(bank)
    # docs/guide.md's bank example, run on this run's LoRA collection
    import re

    block = re.search(r"## Serving a collection from one bank.*?```python\n(.*?)```",
                      (ROOT / "docs" / "guide.md").read_text(), re.S)[1]
    block = block.replace("digits-lora", "tiny-lora").replace("k16", "k4")
    for a, b in (("model-017", "model-001"), ("model-021", "model-002")):
        block = block.replace(a, b)
    ns = {}
    cwd = os.getcwd()
    os.chdir(finished)
    try:
        exec(compile(block, "docs/guide.md", "exec"), ns)
    finally:
        os.chdir(cwd)
    torch.testing.assert_close(ns["logits"][0], ns["same"][0])
    assert ns["served"].bank.models[-1] == "new-model" and len(ns["served"].bank) == 9


def test_adapt_and_merge_stages(finished):
    """adapt on the LoRA zoo (every method and seed, the export loads with PEFT); merge on the
    shared-init MLPs against their mean (subspace mean = plain mean: the merged models are the
    basis) and on the LoRAs against their base."""
    from peft import PeftModel

    from weightspace import zoo

    res = finished / "results"
    r = pd.read_parquet(res / "tiny-lora" / "adapt" / "delta" / "results.parquet")
    assert set(r["method"]) == {"none-base", "head", "lora", "tinylora", "coef-base", "random"}
    assert (r.groupby("method")["seed"].nunique() == 2).all()
    assert (r.loc[r.method == "coef-base", "trainable"] == 4).all()  # one 2×2 core (fc1)
    summary = pd.read_csv(res / "tiny-lora" / "adapt" / "delta" / "summary.csv")
    assert set(summary["method"]) == set(r["method"])
    task = r["task"].iloc[0]
    assert task not in set(pd.read_csv(res / "tiny-lora" / "collection.tsv", sep="\t")["task"])
    lora = res / "tiny-lora" / "adapt" / "delta" / "export" / task / "lora"
    import json

    base_rel = json.loads((lora / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert (lora / base_rel / "model.safetensors").exists()  # the base resolves from the export folder
    PeftModel.from_pretrained(zoo.MLP.from_folder(lora / base_rel), str(lora))
    for c, view, reference in [("tiny-shared", "full", "mean of the merged models"), ("tiny-lora", "delta", "base")]:
        s = pd.read_csv(res / c / "merge" / view / "summary.csv")
        assert {"mean", "task_arithmetic", "ties", "dare_ties", "magnitude_prune", "subspace_mean",
                "subspace_ties", "tsv", "iso_c", "knots_ties"} == set(s["method"])
        assert (s["reference"] == reference).all() and {"ci95", "minus_task_arithmetic", "wins"} <= set(s)
        assert (res / c / "figures" / view / "merge_normalised_accuracy.png").stat().st_size > 10_000
    # both sets of all candidates are every basis model (one per task), so there the subspace mean
    # is the plain mean (μ float32)
    for c, view in [("tiny-shared", "full"), ("tiny-lora", "delta")]:
        scores = pd.read_parquet(res / c / "merge" / view / "scores.parquet")
        table = pd.read_csv(res / c / "collection.tsv", sep="\t")
        biggest = scores[scores.set_size == scores.set_size.max()]
        assert set(biggest["model"]) == set(table.loc[table.split == "basis", "key"])
        assert pd.read_csv(res / c / "merge" / view / "summary.csv")["subspace_mean_vs_mean"].max() < 1e-6
    assert (res / "tiny-lora" / "figures" / "delta" / "adapt_accuracy_vs_trainable.png").stat().st_size > 10_000


def test_adapt_setting_change_reruns_adapt_only(finished):
    changed = yaml.safe_load(yaml.safe_dump(TINY))
    changed["collections"]["tiny-lora"]["adapt"]["steps"] = 30
    write_config(finished, changed, "adapt.yaml")
    counts = job_counts(snakemake(finished, "-n", config="adapt.yaml").stdout)
    assert counts == {"adapt": 1, "adapt_figure": 1, "all": 1, "total": 3}, counts


def test_report_opens_in_a_browser_with_the_verdict_on_its_first_page(finished):
    """snakemake --report, opened in headless chromium: no script errors, and the rendered first
    page (the DOM after the report's scripts ran, not the HTML source) shows the verdict table
    and the transfer pairs' table."""
    import shutil

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium)")
    snakemake(finished, "--report", "results/report.html")
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--virtual-time-budget=10000", "--dump-dom",
                           (finished / "results" / "report.html").as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Uncaught" not in proc.stderr, proc.stderr[-2000:]
    dom = proc.stdout
    assert 'id="verdict"' in dom and "Verdict per collection and view" in dom
    table = dom.split('id="verdict"')[1].split("</table>")[0]
    assert "tiny-shared" in table and "tiny-lora" in table and "shared" in table
    # the first page is the verdict and one line (a long description is centred by Snakemake's
    # template and pushes the table above the top of a 1280×800 window, where it cannot be scrolled to)
    description = (ROOT / "workflow" / "report" / "workflow.rst").read_text().split(":file: results/summary.html")[1]
    assert len(description.split()) < 60
    transfer = dom.split('id="transfer"')[1].split("</table>")[0]  # a row per transfer pair
    assert "tiny-shared → tiny-mnist [full]" in transfer and "tiny-mnist → tiny-shared [full]" in transfer


def test_logs_carry_no_zarr_timestamp_warning(finished):
    logs = list((finished / "logs").rglob("*.log"))
    assert logs and not [p for p in logs if "snakemake_timestamp" in p.read_text()]


def test_second_run_has_nothing_to_do(finished):
    proc = snakemake(finished, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr
    # The same settings with every mapping's keys in reverse order rerun nothing (Snakemake
    # compares params by repr: a config rewritten by a YAML tool reran every stage from the zoo).
    # The order of the collections is the run's own, and kept.
    def reverse(value):
        if isinstance(value, dict):
            return {k: reverse(value[k]) for k in reversed(list(value))}
        return [reverse(v) for v in value] if isinstance(value, list) else value

    written = yaml.safe_load((finished / "config.yaml").read_text())
    shuffled = {k: reverse(v) for k, v in reversed(list(written.items())) if k != "collections"}
    shuffled["collections"] = {c: reverse(spec) for c, spec in written["collections"].items()}
    try:
        (finished / "config.yaml").write_text(yaml.safe_dump(shuffled, sort_keys=False))
        proc = snakemake(finished, "-n")
        assert "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout[-3000:]
    finally:
        write_config(finished, TINY)


def test_parameter_change_reruns_that_stage_and_after_only(finished):
    changed = yaml.safe_load(yaml.safe_dump(TINY))
    changed["project"]["ks"] = [1, 2, 4, 16]
    write_config(finished, changed, "changed.yaml")
    counts = job_counts(snakemake(finished, "-n", config="changed.yaml").stdout)
    assert counts.get("project") == 4 and counts.get("evaluate") == 4  # tiny-shared, tiny-mnist, tiny-lora × 2 views
    for before in ("zoo", "extract", "subspace"):
        assert before not in counts, counts


def test_minimal_config_gets_defaults(tmp_path):
    write_config(tmp_path, {"collections": {"z": {"source": "zoo", "zoo": {"kind": "mlp", "count": 5}}}})
    proc = snakemake(tmp_path, "-n")
    counts = job_counts(proc.stdout)
    assert counts["fetch_extract_z"] == 1 and counts["subspace"] == 2  # one job extracts a zoo; default layer_groups
    assert not (tmp_path / "results").exists()  # a dry run plans from the lock in memory, writes nothing


def test_bad_config_names_the_key(tmp_path):
    bad = yaml.safe_load(yaml.safe_dump(TINY))
    bad["subspace"]["max_kay"] = 3
    write_config(tmp_path, bad)
    proc = snakemake(tmp_path, "-n", check=False)
    assert proc.returncode != 0
    assert "max_kay" in proc.stdout + proc.stderr
    bad = yaml.safe_load(yaml.safe_dump(TINY))
    bad["collections"]["tiny-shared"]["zoo"]["count"] = "many"
    write_config(tmp_path, bad)
    proc = snakemake(tmp_path, "-n", check=False)
    assert proc.returncode != 0 and "'many' is not of type 'integer'" in proc.stdout + proc.stderr


def test_missing_evaluation_file_fails_the_dry_run(tmp_path):
    """Evaluation data named in the config is a rule input: missing, the dry run stops naming it."""
    config = yaml.safe_load(yaml.safe_dump(TINY))
    config["collections"] = {"tiny-shared": config["collections"]["tiny-shared"]}
    config["align"]["across"] = []  # its pairs name tiny-lora
    config["transfer"]["pairs"] = []  # and these tiny-mnist
    config["collections"]["tiny-shared"]["evaluation"] = {"data": "no-such-examples.parquet"}
    write_config(tmp_path, config)
    proc = snakemake(tmp_path, "-n", check=False)
    assert proc.returncode != 0 and "no-such-examples.parquet" in proc.stdout + proc.stderr


def test_interrupted_run_resumes_and_a_failed_rerun_is_redone(tmp_path):
    # A local collection (a fetch and an extract job per model; a zoo's are one job) of 12 small
    # models, and the stages this test is about (alignment, merge and sweep are left out: time).
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    for i in range(12):
        folder = tmp_path / "models" / f"model-{i:03d}"
        folder.mkdir(parents=True)
        save_file({"fc1.weight": torch.randn(32, 64, generator=g), "fc2.weight": torch.randn(10, 32, generator=g)},
                  str(folder / "model.safetensors"))
        (folder / "config.json").write_text('{"model_type": "tiny"}')
    config = {"collections": {"tiny-shared": {"source": "local", "path": str(tmp_path / "models"), "evaluator": "none",
                                              "batch": 1,  # a job per model: some finish before the kill
                                              "split": {"heldout": ["model-009", "model-010", "model-011"]}}},
              "subspace": TINY["subspace"], "project": TINY["project"], "align": {"enabled": False}}
    write_config(tmp_path, config)
    cmd = [*SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           "--configfile", str(tmp_path / "config.yaml"), "--cores", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    weights = tmp_path / "results" / "tiny-shared" / "weights"
    deadline = time.time() + 240
    while time.time() < deadline and len(list(weights.glob("model-*.zarr"))) < 4:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # a crash: no clean-up at all
    proc.wait()
    # Jobs that were finishing at the kill carry Snakemake's incomplete marker and rerun;
    # every store whose job Snakemake registered as complete must be left untouched.
    marked = {Path(base64.urlsafe_b64decode(p.name).decode()).name
              for p in (tmp_path / ".snakemake" / "incomplete").glob("*")}
    done = {p.name: p.stat().st_mtime_ns for p in weights.glob("model-*.zarr") if p.name not in marked}
    assert 2 <= len(done) < 12, f"the kill came at the wrong time: {sorted(done)}"
    snakemake(tmp_path, "--unlock")
    snakemake(tmp_path)
    stores = {p.name: p.stat().st_mtime_ns for p in weights.glob("model-*.zarr")}
    assert len(stores) == 12
    assert all(stores[name] == mtime for name, mtime in done.items()), "finished stores were redone"
    assert not list(weights.glob(".tmp-*")), "a half-written store was left behind"
    assert (tmp_path / "results" / "summary.csv").exists()
    assert "Nothing to be done" in snakemake(tmp_path, "-n").stdout

    # A failure after a parameter change (issue 15): the changed stage's job dies as under the
    # OOM killer (its process alone, SIGKILL); the next run must redo it and all after it.
    config["project"] = {"ks": [1, 3, 4, 16]}
    write_config(tmp_path, config)
    summary = (tmp_path / "results" / "summary.csv").read_bytes()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    assert kill_job(proc, "project.py"), "the project job never started"
    assert proc.wait() != 0
    planned = job_counts(snakemake(tmp_path, "-n").stdout)
    assert {"project", "evaluate", "figures", "overview"} <= set(planned), planned
    snakemake(tmp_path)
    metrics = pd.read_parquet(tmp_path / "results" / "tiny-shared" / "evaluate" / "full" / "metrics.parquet")
    assert sorted(metrics["k"].dropna().unique()) == [1, 3, 4, 16]
    assert (tmp_path / "results" / "summary.csv").read_bytes() != summary
    assert "Nothing to be done" in snakemake(tmp_path, "-n").stdout

    # A local model is its folder's content (issue 26): overwritten in place, its fetch and all
    # after it are planned; deleted, it is warned about and planned for a fetch that rejects it.
    save_file({"fc1.weight": torch.randn(32, 64, generator=g), "fc2.weight": torch.randn(10, 32, generator=g)},
              str(tmp_path / "models" / "model-002" / "model.safetensors"))
    planned = job_counts(snakemake(tmp_path, "-n").stdout)
    assert planned.get("fetch") == 1 and planned.get("extract") == 1 and "subspace" in planned, planned
    shutil.rmtree(tmp_path / "models" / "model-004")
    proc = snakemake(tmp_path, "-n")
    assert "model model-004: its folder" in proc.stderr + proc.stdout and "is gone" in proc.stderr + proc.stdout
    assert job_counts(proc.stdout).get("fetch") == 2  # model-002 still, and model-004's rejection


def kill_job(proc, script: str, timeout: float = 240) -> bool:
    """SIGKILL the first job of ``proc`` (a Snakemake run) whose command line names ``script``:
    the job dies alone, as under the OOM killer, and Snakemake sees it fail."""
    import psutil

    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        for child in psutil.Process(proc.pid).children(recursive=True):
            try:
                if any(script in part for part in child.cmdline()):
                    time.sleep(0.3)  # inside its work, not at its start
                    child.kill()
                    return True
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.1)
    return False


def test_lint_is_clean():
    proc = subprocess.run([*SNAKEMAKE, "--lint", "--snakefile", str(ROOT / "Snakefile"),
                           "--directory", str(ROOT)], capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    # The one lint left on purpose: no per-rule conda environments. An env file installing this
    # package would need `pip: -e ..`, which conda resolves next to Snakemake's copy of the file
    # (.snakemake/conda/), not here; the rules run in the environment Snakemake runs in.
    findings = set(re.findall(r"^    \* (.+?):$", out, re.M))
    assert findings <= {"Specify a conda environment or container for each rule."}, out
    assert "Lints for rule" in out or "Congratulations" in out, out  # the linter ran
    assert "No validator found" not in out and "Traceback" not in out



def test_a_script_reruns_outside_snakemake_from_its_job_file(finished, tmp_path):
    """Each job writes its stand-in beside its log; ``python workflow/scripts/X.py job.yaml``
    redoes the job by hand (for a debugger) with the same result."""
    spec = yaml.safe_load((finished / "logs" / "tiny-shared" / "project" / "full.log.job.yaml").read_text())
    assert spec["wildcards"] == {"c": "tiny-shared", "view": "full"} and spec["threads"] == 1
    spec["output"] = {"coefficients": str(tmp_path / "coefficients.zarr"), "energy": str(tmp_path / "energy.parquet")}
    spec["log"] = [str(tmp_path / "project.log")]
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec))
    proc = subprocess.run([sys.executable, str(ROOT / "workflow" / "scripts" / "project.py"), str(tmp_path / "job.yaml")],
                          cwd=finished, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr + (tmp_path / "project.log").read_text()
    assert not (tmp_path / "project.log.job.yaml").exists()  # a stand-in does not rewrite its own file
    ours = pd.read_parquet(tmp_path / "energy.parquet")
    pd.testing.assert_frame_equal(ours, pd.read_parquet(finished / "results/tiny-shared/project/full/energy.parquet"))
    usage = subprocess.run([sys.executable, str(ROOT / "workflow" / "scripts" / "project.py")], capture_output=True, text=True)
    assert usage.returncode != 0 and "JOB.yaml" in usage.stderr
