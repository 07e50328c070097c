"""A battery of bad inputs: every one is rejected when the model is described (named, with the
problem), never found later by a crash; one bad model never blocks its collection, and the
other models' results equal those of a run without it."""

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import save_file

from weightspace.collection import resolve_local, screen
from weightspace.hub import manifest_for

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {"fc1.weight": (6, 5), "fc2.weight": (3, 6)}


def good_tensors(seed):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(*s, generator=g) for n, s in SHAPES.items()}


def write_good(folder: Path, seed: int):
    folder.mkdir(parents=True)
    save_file(good_tensors(seed), str(folder / "model.safetensors"))


def write_raw(folder: Path, header, data: bytes):
    """A safetensors file from a hand-made header (any JSON) and data bytes."""
    folder.mkdir(parents=True)
    head = json.dumps(header).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(head)) + head + data)


def f32_header(**override):
    """The header of the good tensors (F32), with entries overridden."""
    h, at = {}, 0
    for n, s in SHAPES.items():
        size = 4 * int(np.prod(s))
        h[n] = {"dtype": "F32", "shape": list(s), "data_offsets": [at, at + size]}
        at += size
    h.update(override)
    return h, at


def bad_models(root: Path) -> dict[str, str]:
    """Write one folder per bad case under ``root``; returns {folder name: expected reason part}."""
    expect = {}
    h, size = f32_header()
    data = np.ones(size // 4, dtype="<f4").tobytes()
    write_raw(root / "bad-header-list", [1, 2, 3], b"")
    expect["bad-header-list"] = "not a JSON object"
    write_raw(root / "bad-entry", f32_header(**{"fc1.weight": {"dtype": "F32", "shape": [6, 5]}})[0], data)
    expect["bad-entry"] = "no valid dtype, shape and data_offsets"
    hh = f32_header()[0]
    hh["fc1.weight"]["data_offsets"] = [0, 100]
    write_raw(root / "bad-offsets", hh, data)
    expect["bad-offsets"] = "needs 120"
    hh = f32_header()[0]
    hh["fc2.weight"]["data_offsets"] = [60, 60 + 72]
    write_raw(root / "bad-overlap", hh, data)
    expect["bad-overlap"] = "overlap"
    write_raw(root / "bad-truncated", h, data[:-8])
    expect["bad-truncated"] = "truncated"
    hh = f32_header()[0]
    hh["fc1.weight"] = {"dtype": "F8_E4M3", "shape": [6, 5], "data_offsets": [0, 30]}
    hh["fc2.weight"]["data_offsets"] = [30, 30 + 72]
    write_raw(root / "bad-float8", hh, data[: 30 + 72])
    expect["bad-float8"] = "unsupported dtype F8_E4M3"
    hh = f32_header()[0]
    hh["../escape"] = hh.pop("fc2.weight")
    write_raw(root / "bad-name", hh, data)
    expect["bad-name"] = "is not a safe name"
    t = good_tensors(99)
    t["fc2.weight"][1, 2] = float("nan")
    (root / "bad-nan").mkdir()
    save_file(t, str(root / "bad-nan" / "model.safetensors"))
    expect["bad-nan"] = "tensor fc2.weight holds NaN or Inf"
    t = {n: v.to(torch.bfloat16) for n, v in good_tensors(98).items()}
    t["fc1.weight"][0, 0] = float("inf")
    (root / "bad-inf-bf16").mkdir()
    save_file(t, str(root / "bad-inf-bf16" / "model.safetensors"))
    expect["bad-inf-bf16"] = "tensor fc1.weight holds NaN or Inf"
    (root / "bad-pickle-only").mkdir()
    (root / "bad-pickle-only" / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    expect["bad-pickle-only"] = "only pickle checkpoints"
    (root / "bad-index").mkdir()
    save_file(good_tensors(97), str(root / "bad-index" / "model-00001.safetensors"))
    (root / "bad-index" / "model.safetensors.index.json").write_text("{not json")
    expect["bad-index"] = "cannot be described (JSONDecodeError"
    t = good_tensors(96)
    t["fc1.weight"] = (t["fc1.weight"] * 10).to(torch.int8)
    (root / "bad-int8").mkdir()
    save_file(t, str(root / "bad-int8" / "model.safetensors"))
    expect["bad-int8"] = "tensor fc1.weight is I8 where reference"
    # read when the collection is listed (parse time): none of these may stop the workflow
    (root / "bad-dangling").mkdir()
    (root / "bad-dangling" / "model.safetensors").symlink_to(root / "no-such-file.safetensors")
    expect["bad-dangling"] = "FileNotFoundError"
    write_good(root / "bad-config-truncated", 95)
    (root / "bad-config-truncated" / "config.json").write_text('{"model_type": "ml')
    expect["bad-config-truncated"] = "config.json: cannot be read as JSON (JSONDecodeError"
    write_good(root / "bad-config-unreadable", 94)
    (root / "bad-config-unreadable" / "config.json").mkdir()  # unreadable as a file, even for root
    expect["bad-config-unreadable"] = "config.json: cannot be read as JSON (IsADirectoryError"
    (root / "___").mkdir()
    save_file(good_tensors(93), str(root / "___" / "model.safetensors"))
    expect["___"] = "gives no safe key"
    (root / "bad-config-only").mkdir()
    (root / "bad-config-only" / "config.json").write_text('{"model_type": "mlp"}')
    expect["bad-config-only"] = "no safetensors weights (only ['config.json'])"
    t = good_tensors(92)
    t["fc1.weight"] = torch.zeros(0, 5)
    (root / "bad-empty").mkdir()
    save_file(t, str(root / "bad-empty" / "model.safetensors"))
    expect["bad-empty"] = "tensor fc1.weight has no elements (shape [0, 5])"
    return expect


def test_every_bad_input_is_rejected_by_name_with_its_problem(tmp_path):
    expect = bad_models(tmp_path / "models")
    for i in range(4):
        write_good(tmp_path / "models" / f"good-{i}", i)
    rows = resolve_local("c", str(tmp_path / "models"))
    assert set(expect) | {f"good-{i}" for i in range(4)} == set(rows["id"])  # pickle-only listed too
    manifests = {r.key: manifest_for(r._asdict()) for r in rows.itertuples()}
    result = screen(manifests).set_index("key")
    keys = dict(zip(rows["id"], rows["key"]))
    assert keys["___"].startswith("unnamed-")
    for name, part in expect.items():
        row = result.loc[keys[name]]
        assert row.status == "rejected", (name, row.reason)
        assert name in row.reason and part in row.reason, (name, row.reason)
    assert (result.loc[[f"good-{i}" for i in range(4)], "status"] == "accepted").all()


def smk(workdir, *args):
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.e2e
def test_bad_models_never_block_the_collection_nor_change_the_others(tmp_path):
    """A local collection of six good models and every bad case runs through; the bad ones are
    listed in rejected.tsv with their reasons; every good model's results equal those of a run
    of the good models alone."""
    expect = {}
    for name, models in (("mixed", True), ("clean", False)):
        root = tmp_path / name
        for i in range(6):
            write_good(root / "models" / f"good-{i}", i)
        if models:
            expect = bad_models(root / "models")
        config = {"collections": {"c": {"source": "local", "path": str(root / "models"), "evaluator": "none",
                                        "split": {"heldout": ["good-5"]}}},
                  "subspace": {"max_k": 4, "layer_groups": 1, "null_draws": 19}, "project": {"ks": [1, 2]},
                  "export": {"ks": []}, "align": {"enabled": False}}
        (root / "config.yaml").write_text(yaml.safe_dump(config))
        smk(root)
    rejected = pd.read_csv(tmp_path / "mixed" / "results" / "c" / "rejected.tsv", sep="\t").set_index("key")
    lock = pd.read_csv(tmp_path / "mixed" / "results" / "c" / "collection.tsv", sep="\t", dtype=str)
    keys = dict(zip(lock["id"], lock["key"]))
    assert set(rejected.index) == {keys[name] for name in expect}
    for name, part in expect.items():
        assert part in rejected.loc[keys[name], "reason"], (name, rejected.loc[keys[name], "reason"])
    got, want = (pd.read_parquet(tmp_path / n / "results" / "c" / "evaluate" / "full" / "metrics.parquet")
                 .sort_values(["model", "method", "k"]).reset_index(drop=True) for n in ("mixed", "clean"))
    pd.testing.assert_frame_equal(got, want)


def jobs_run(proc) -> list[str]:
    """The rules of the jobs a Snakemake invocation ran (from its log on stdout/stderr)."""
    import re

    return re.findall(r"^(?:local)?rule (\w+):$", proc.stdout + proc.stderr, flags=re.M)


@pytest.mark.e2e
def test_a_local_models_identity_is_its_content(tmp_path):
    """Against a fresh run, bitwise: a collection's folder copied elsewhere (new paths, mtimes and
    inodes, same bytes) reruns only its listing; then a model overwritten in place and another
    deleted rerun their own batches' fetch+extract (batches of two) and what reads every model,
    never another batch, and give the tables of a fresh run of the folder as it now is; the
    deleted model is named in rejected.tsv."""
    import shutil

    def configure(root: Path, models: Path):
        config = {"collections": {"c": {"source": "local", "path": str(models), "evaluator": "none", "batch": 2,
                                        "split": {"heldout": ["good-5"]}}},
                  "subspace": {"max_k": 4, "layer_groups": 1, "null_draws": 19}, "project": {"ks": [1, 2]},
                  "export": {"ks": []}, "align": {"enabled": False}}
        (root / "config.yaml").write_text(yaml.safe_dump(config))

    run, fresh = tmp_path / "run", tmp_path / "fresh"
    for i in range(6):
        write_good(run / "models" / f"good-{i}", i)
    configure(run, run / "models")
    smk(run)
    shutil.copytree(run / "models", run / "moved")
    shutil.rmtree(run / "models")
    configure(run, run / "moved")
    assert set(jobs_run(smk(run))) == {"collection_listing", "overview", "all"}
    store = run / "results" / "c" / "weights" / "good-4.zarr" / "zarr.json"  # batch 2: good-4, good-5
    before = store.stat().st_mtime_ns
    shutil.copy(run / "moved" / "good-4" / "model.safetensors", run / "moved" / "good-1" / "model.safetensors")
    shutil.rmtree(run / "moved" / "good-3")
    ran = jobs_run(smk(run))
    assert sorted(r for r in ran if r.startswith("fetch")) == ["fetch_extract_c_0", "fetch_extract_c_1"], ran
    assert store.stat().st_mtime_ns == before
    shutil.copytree(run / "moved", fresh / "models")
    configure(fresh, fresh / "models")
    smk(fresh)
    for table in ("evaluate/full/metrics.parquet", "evaluate/full/compression.csv", "subspace/full/sharing.csv",
                  "subspace/full/spectra.parquet", "project/full/energy.parquet"):
        got, want = (root / "results" / "c" / table for root in (run, fresh))
        assert got.read_bytes() == want.read_bytes(), table
    rejected = pd.read_csv(run / "results" / "c" / "rejected.tsv", sep="\t").set_index("key")
    assert list(rejected.index) == ["good-3"] and "is gone" in rejected.loc["good-3", "reason"]


def dry_run_fails(tmp_path, collection: dict, *needles):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"collections": {"c": collection}}))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           "--configfile", str(tmp_path / "config.yaml"), "--cores", "1", "-n"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and all(n in out for n in needles), out[-2000:]
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("*.zarr"))


def test_settings_that_cannot_work_are_refused_when_the_config_is_read(tmp_path):
    for i in range(3):
        write_good(tmp_path / "models" / f"good-{i}", i)
    # the zoo evaluator scores zoo MLPs only (your own models default to none: a minimal config runs)
    dry_run_fails(tmp_path, {"source": "local", "path": str(tmp_path / "models"), "evaluator": "zoo"},
                  "the zoo evaluator scores the built-in zoo's MLPs only", "good-0")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"collections": {"c": {"source": "local",
                                                                                "path": str(tmp_path / "models")}}}))
    ok = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory",
                         str(tmp_path), "--configfile", str(tmp_path / "config.yaml"), "--cores", "1", "-n"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr[-2000:]
    # a text evaluator without a tokenizer anywhere (it would ask the Hub for "None" in evaluate);
    # with tokenizer files in the model folders, the first one is used
    (tmp_path / "texts.csv").write_text("text,label\nhello there,0\n")
    text = {"source": "local", "path": str(tmp_path / "models"), "evaluator": "text-classification",
            "evaluation": {"data": str(tmp_path / "texts.csv")}}
    dry_run_fails(tmp_path, text, "collection c: evaluator text-classification needs a tokenizer")
    (tmp_path / "models" / "good-1" / "tokenizer_config.json").write_text("{}")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"collections": {"c": text}}))
    found = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory",
                            str(tmp_path), "--configfile", str(tmp_path / "config.yaml"), "--cores", "1", "-n"],
                           capture_output=True, text=True)
    assert found.returncode == 0, found.stderr[-2000:]
    (tmp_path / "models" / "good-1" / "tokenizer_config.json").unlink()
    # a repo id huggingface_hub refuses, before any request
    dry_run_fails(tmp_path, {"source": "hub", "repos": ["org/ok", "org/bad--name"], "evaluator": "none"},
                  "'org/bad--name' is not a valid Hub repo id")
    # two folders whose keys collide: both named
    write_good(tmp_path / "clash" / "org m", 0)
    write_good(tmp_path / "clash" / "org_m", 1)
    from weightspace.collection import slugify

    assert slugify("org m") == slugify("org_m")
    dry_run_fails(tmp_path, {"source": "local", "path": str(tmp_path / "clash"), "evaluator": "none"},
                  "org m", "org_m", "map to the same key")


def test_a_dry_run_writes_nothing(tmp_path):
    """-n on a fresh config: the DAG is planned from the lock held in memory; no file appears."""
    for i in range(3):
        write_good(tmp_path / "models" / f"good-{i}", i)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(
        {"collections": {"c": {"source": "local", "path": str(tmp_path / "models"), "evaluator": "none"}}}))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for flag in ("-n", "--lint"):
        subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory",
                        str(tmp_path), "--configfile", str(tmp_path / "config.yaml"), "--cores", "1", flag],
                       capture_output=True, text=True)
        after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if ".snakemake" not in p.parts)
        assert after == before, set(after) - set(before)


def test_a_small_collection_still_gets_a_held_out_model(capsys):
    from weightspace.collection import split_of, splits

    keys = [f"m{i}" for i in range(4)]
    split = {"heldout_fraction": 0.05}
    assert [split_of(k, split) for k in keys] == ["basis"] * 4  # the hash alone holds none out
    got = splits(keys, split)
    assert got.count("heldout") == 1 and got == splits(keys, split)  # the same one every time
    assert splits(keys[:2], split) == ["basis", "basis"] and "too few for a held-out model" in capsys.readouterr().err


def test_the_lock_is_not_written_while_another_run_holds_the_directory(tmp_path):
    """Snakemake's own lock in .snakemake/locks: a collection table that would change is not
    written; the invocation stops saying why."""
    for i in range(3):
        write_good(tmp_path / "models" / f"good-{i}", i)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(
        {"collections": {"c": {"source": "local", "path": str(tmp_path / "models"), "evaluator": "none"}}}))
    locks = tmp_path / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.input.lock").write_text(str(tmp_path / "results" / "c" / "collection.tsv") + "\n")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory",
                           str(tmp_path), "--configfile", str(tmp_path / "config.yaml"), "--cores", "1"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "while another run holds this directory" in proc.stdout + proc.stderr
    assert not (tmp_path / "results" / "c" / "collection.tsv").exists()


def test_a_folder_that_could_not_be_read_is_read_again_once_fixed(tmp_path):
    """A row the listing could not resolve (empty revision, the problem in note) is re-resolved on
    the next run: fixing the folder brings the model in, while resolved rows keep their pins."""
    from weightspace.collection import update_lock

    for i in range(3):
        write_good(tmp_path / "models" / f"good-{i}", i)
    write_good(tmp_path / "models" / "later-fixed", 9)
    (tmp_path / "models" / "later-fixed" / "config.json").write_text("{truncated")
    lock = tmp_path / "collection.tsv"
    first = update_lock(lock, resolve_local("c", str(tmp_path / "models")), {})
    row = first.set_index("key").loc["later-fixed"]
    assert row.revision == "" and "cannot be read as JSON" in row.note
    (tmp_path / "models" / "later-fixed" / "config.json").write_text('{"model_type": "mlp"}')
    second = update_lock(lock, resolve_local("c", str(tmp_path / "models")), {}).set_index("key")
    assert len(second.loc["later-fixed", "revision"]) == 40 and second.loc["later-fixed", "note"] == ""
    assert (second.loc[[f"good-{i}" for i in range(3)], "revision"] == first.set_index("key").loc[
        [f"good-{i}" for i in range(3)], "revision"]).all()
    assert manifest_for({**second.loc["later-fixed"].to_dict(), "key": "later-fixed"})["status"] == "ok"


def test_a_local_models_row_follows_its_folder(tmp_path, caplog):
    """A local model's revision is its content: overwritten in place it changes (so its fetch and
    all after it rerun); touched, copied or moved it does not; a model whose folder is gone keeps
    its row, without revision and with the reason (its fetch rejects it), and comes back when its
    folder does. Each row's stamp file changes exactly when its revision does."""
    import logging
    import os
    import shutil

    from weightspace.collection import update_lock

    for i in range(4):
        write_good(tmp_path / "models" / f"good-{i}", i)
    lock, digests = tmp_path / "collection.tsv", {}
    first = update_lock(lock, resolve_local("c", str(tmp_path / "models"), digests), {}).set_index("key")
    stamps = {k: (tmp_path / "revisions" / k).stat().st_mtime_ns for k in first.index}
    assert len(digests) == 4  # one file each, hashed once
    save_file(good_tensors(42), str(tmp_path / "models" / "good-1" / "model.safetensors"))  # cp other good-1
    os.utime(tmp_path / "models" / "good-2" / "model.safetensors")  # touched: same bytes
    shutil.rmtree(tmp_path / "models" / "good-3")
    with caplog.at_level(logging.WARNING, logger="weightspace"):
        second = update_lock(lock, resolve_local("c", str(tmp_path / "models"), digests), {}).set_index("key")
    assert second.loc["good-1", "revision"] != first.loc["good-1", "revision"]
    assert (second.loc[["good-0", "good-2"], "revision"] == first.loc[["good-0", "good-2"], "revision"]).all()
    assert second.loc["good-3", "revision"] == "" and "its folder" in second.loc["good-3", "note"]
    assert "model good-3: its folder" in caplog.text and "is gone" in caplog.text
    changed = {k for k in first.index if (tmp_path / "revisions" / k).stat().st_mtime_ns != stamps[k]}
    assert changed == {"good-1", "good-3"}
    rejected = manifest_for({**second.loc["good-3"].to_dict(), "key": "good-3"})
    assert rejected["status"] == "rejected" and "is gone" in rejected["reason"]
    shutil.copytree(tmp_path / "models", tmp_path / "copied")  # new mtimes and inodes, same bytes
    shutil.rmtree(tmp_path / "models")
    stamps = {k: (tmp_path / "revisions" / k).stat().st_mtime_ns for k in first.index}
    third = update_lock(lock, resolve_local("c", str(tmp_path / "copied"), digests), {}).set_index("key")
    assert (third["revision"] == second["revision"]).all()
    assert third.loc["good-0", "path"] == str(tmp_path / "copied" / "good-0")
    assert all((tmp_path / "revisions" / k).stat().st_mtime_ns == stamps[k] for k in first.index)
    write_good(tmp_path / "copied" / "good-3", 3)  # back, as it was
    fourth = update_lock(lock, resolve_local("c", str(tmp_path / "copied"), digests), {}).set_index("key")
    assert fourth.loc["good-3", "revision"] == first.loc["good-3", "revision"] and fourth.loc["good-3", "note"] == ""


def test_a_config_mistake_is_one_line_naming_where_it_is():
    """Each mistake is one line with its place in the config; an unknown key gets the nearest
    known one; the schema is never printed (Snakemake's validate prints all of it)."""
    from weightspace.configcheck import config_errors

    schema = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())
    good = {"collections": {"z": {"source": "zoo", "zoo": {"kind": "mlp", "count": 5}}}}
    assert config_errors(good, schema) == []
    bad = {"collections": {"z": {"source": "zoo", "zoo": {"kind": "mlp", "count": "many"}, "splitt": {}}},
           "subspace": {"maxk": 16}, "project": {"ks": [1, -2]}, "report": {"kk": 3, "fdr": 0.05}}
    lines = config_errors(bad, schema)
    assert "config: subspace: unknown key 'maxk' (did you mean 'max_k'?)" in lines
    assert "config: collections.z: unknown key 'splitt' (did you mean 'split'?)" in lines
    assert "config: collections.z.zoo.count: 'many' is not of type 'integer'" in lines
    assert any(line.startswith("config: project.ks.1: -2 is less than the minimum") for line in lines), lines
    assert any(line.startswith("config: report: unknown key 'kk'") for line in lines), lines
    assert len(lines) == 5 and all("\n" not in line and len(line) < 300 for line in lines), lines


def test_model_folders_are_found_at_any_depth(tmp_path):
    """A trainer's layout (run/checkpoint-500/model.safetensors beside run/trainer_state.json) gives
    a model per checkpoint, named by its path; a hidden folder is not looked into."""
    write_good(tmp_path / "models" / "good-0", 0)
    for step in (500, 1000):
        write_good(tmp_path / "models" / "run-a" / f"checkpoint-{step}", step)
    (tmp_path / "models" / "run-a" / "trainer_state.json").write_text("{}")
    write_good(tmp_path / "models" / ".cache" / "stale", 7)
    rows = resolve_local("c", str(tmp_path / "models")).set_index("id")
    assert sorted(rows.index) == ["good-0", "run-a/checkpoint-1000", "run-a/checkpoint-500"]
    assert rows.loc["run-a/checkpoint-500", "key"] == "run-a--checkpoint-500"
    assert (rows["revision"].str.len() == 40).all()


def test_a_models_sheet_sets_tasks_and_splits_and_each_mistake_is_one_line(tmp_path):
    """models.tsv (config/models.schema.yaml): its task and split reach the lock; an unknown column
    (with the nearest known one), a split that is neither basis nor heldout, a model listed twice
    and a model the collection does not have are refused, each in one line naming it."""
    from weightspace.collection import read_sheet, update_lock

    for i in range(4):
        write_good(tmp_path / "models" / f"good-{i}", i)
    sheet = tmp_path / "models" / "models.tsv"
    sheet.write_text("model\ttask\tsplit\ngood-0\tmovies\t\ngood-3\tpolitics\theldout\n")
    table = update_lock(tmp_path / "lock.tsv", resolve_local("c", str(tmp_path / "models")), {},
                        sheet=read_sheet(sheet, "c")).set_index("key")
    assert list(table["task"]) == ["movies", "", "", "politics"] and list(table["split"]) == ["basis"] * 3 + ["heldout"]
    sheet.write_text("model\ttsk\nx\ty\n")
    with pytest.raises(ValueError, match=r"unknown column 'tsk' \(did you mean 'task'\?\)"):
        read_sheet(sheet, "c")
    sheet.write_text("model\tsplit\ngood-0\ttest\ngood-0\tbasis\n")
    with pytest.raises(ValueError) as err:
        read_sheet(sheet, "c")
    lines = str(err.value).splitlines()
    assert len(lines) == 2 and "line 2 (model 'good-0'): split: 'test' is not one of" in lines[0]
    assert "models listed twice: ['good-0']" in lines[1]
    sheet.write_text("model\ttask\ngood-9\tmovies\n")
    with pytest.raises(ValueError, match=r"the models sheet lists \['good-9'\], which the collection does not have"):
        update_lock(tmp_path / "lock.tsv", resolve_local("c", str(tmp_path / "models")), {},
                    sheet=read_sheet(sheet, "c"))


def test_a_config_run_in_its_own_folder_reads_its_relative_paths_from_where_it_was_started(tmp_path):
    """make run CONFIG=my.yaml runs in runs/my/ (Snakemake's --directory) with the config's origin
    the checkout: a relative ``path:`` is read from there (the lock holds the models' absolute
    folders), an existing relative file too, and a Hub-style id is kept."""
    from weightspace.configcheck import absolutize

    for i in range(3):
        write_good(tmp_path / "models" / f"good-{i}", i)
    (tmp_path / "tok").mkdir()
    config = {"collections": {"c": {"source": "local", "path": "models", "evaluator": "none",
                                    "evaluation": {"tokenizer": "tok", "processor": "google/vit-base-patch16-224"}}}}
    got = absolutize(yaml.safe_load(yaml.safe_dump(config)), tmp_path)["collections"]["c"]
    assert got["path"] == str(tmp_path / "models") and got["evaluation"]["tokenizer"] == str(tmp_path / "tok")
    assert got["evaluation"]["processor"] == "google/vit-base-patch16-224"
    (tmp_path / "my.yaml").write_text(yaml.safe_dump({"collections": {"c": config["collections"]["c"] | {
        "evaluation": {}}}}))
    run = tmp_path / "runs" / "my"
    run.mkdir(parents=True)
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory",
                           str(run), "--configfile", str(tmp_path / "my.yaml"), "--config", f"origin={tmp_path}",
                           "--cores", "1", "results/c/collection.csv"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lock = pd.read_csv(run / "results" / "c" / "collection.tsv", sep="\t")
    assert list(lock["path"]) == [str(tmp_path / "models" / f"good-{i}") for i in range(3)]
    assert not (tmp_path / "results").exists()
