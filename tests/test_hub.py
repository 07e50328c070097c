"""Hub collections against a local Hub server: pinning, fetching, rejections, growth."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
import zarr
from safetensors.torch import save

from hubserver import FakeHub, Repo
from weightspace import hub
from weightspace.extract import extract_from_manifest
from weightspace.store import ModelStore

ROOT = Path(__file__).resolve().parents[1]
TAG = "base_model:finetune:org/base"


def mlp_files(seed, shapes=None, dtype=torch.float32, extra=None):
    g = torch.Generator().manual_seed(seed)
    shapes = shapes or {"fc1.weight": (16, 8), "fc1.bias": (16,), "fc2.weight": (4, 16)}
    base = torch.Generator().manual_seed(999)
    tensors = {}
    for name, shape in shapes.items():  # a shared part plus a model-specific part
        tensors[name] = (torch.randn(*shape, generator=base) + 0.3 * torch.randn(*shape, generator=g)).to(dtype)
    files = {"model.safetensors": save(tensors), "config.json": json.dumps({"model_type": "mlp"}).encode()}
    files.update(extra or {})
    return files


@pytest.fixture
def server():
    with FakeHub() as h:
        for i in range(6):
            h.repos[f"org/ft-{i}"] = Repo(mlp_files(i), tags=[TAG])
        h.repos["org/other"] = Repo(mlp_files(1), tags=["something-else"])
        yield h


def test_query_pins_shas_and_filters(server):
    rows = hub.resolve_query({"author": "org", "filter": TAG}, endpoint=server.endpoint)
    assert list(rows["id"]) == [f"org/ft-{i}" for i in range(6)]
    assert rows["revision"].str.fullmatch(r"[0-9a-f]{40}").all()
    assert list(rows["key"]) == [f"org--ft-{i}" for i in range(6)]
    assert rows.loc[0, "revision"] == server.repos["org/ft-0"].sha
    assert (rows["format"] == "full").all()


def test_fetch_only_safetensors_and_json_into_hf_cache(server, tmp_path):
    server.repos["org/ft-0"].files["pytorch_model.bin"] = b"\x80\x04 pickle"
    server.repos["org/ft-0"].files["README.md"] = b"# card"
    sha = server.repos["org/ft-0"].sha
    man = hub.fetch("org/ft-0", sha, endpoint=server.endpoint, cache_dir=str(tmp_path / "cache"))
    assert man["status"] == "ok", man
    assert sorted(f["name"] for f in man["files"]) == ["config.json", "model.safetensors"]
    assert man["folder"].startswith(str(tmp_path / "cache"))
    data = server.repos["org/ft-0"].files["model.safetensors"]
    digest = {f["name"]: f["sha256"] for f in man["files"]}["model.safetensors"]
    assert digest == hashlib.sha256(data).hexdigest()
    assert man["tensors"]["fc1.weight"] == [[16, 8], "F32"]
    assert not any(p.endswith("pytorch_model.bin") for _, p, _ in server.log)


def test_interrupted_download_resumes_with_range(server, tmp_path):
    big = torch.arange(3_000_000, dtype=torch.float32)  # 12 MB: more than one 10 MB write chunk
    server.repos["org/big"] = Repo({"model.safetensors": save({"w": big.reshape(3000, 1000)})})
    server.cut_after["org/big/model.safetensors"] = 11_000_000
    man = hub.fetch("org/big", server.repos["org/big"].sha, endpoint=server.endpoint,
                    cache_dir=str(tmp_path / "cache"))
    assert man["status"] == "ok"
    path = "org/big/resolve/" + server.repos["org/big"].sha + "/model.safetensors"
    gets = [hdr for m, p, hdr in server.log if m == "GET" and p.endswith(path)]
    assert len(gets) == 2 and gets[1].get("Range", gets[1].get("range", "")).startswith("bytes=1")
    digest = {f["name"]: f["sha256"] for f in man["files"]}["model.safetensors"]
    assert digest == hashlib.sha256(server.repos["org/big"].files["model.safetensors"]).hexdigest()


@pytest.mark.parametrize("case,reason", [
    ("missing", "org/missing: repository not found (404)"),
    ("gated", "org/gated: gated repository (401)"),
    ("denied", "org/denied: gated repository (403)"),
    ("pickle", "only pickle checkpoints"),
    ("corrupt", "model.safetensors is corrupt"),
    ("truncated", "model.safetensors is truncated"),
    ("badrev", "org/ft-0: revision not found (404)"),
    ("badconfig", "config.json: cannot be read as JSON (JSONDecodeError"),
    ("bad__id", "not a valid Hub repo id"),
])
def test_rejections_name_repo_and_problem(server, tmp_path, case, reason):
    good = server.repos["org/ft-0"].files["model.safetensors"]
    if case == "gated":
        server.repos["org/gated"] = Repo(mlp_files(0), gated=True)
    if case == "denied":
        server.repos["org/denied"] = Repo(mlp_files(0), gated="denied")
    if case == "pickle":
        server.repos["org/pickle"] = Repo({"pytorch_model.bin": b"\x80\x04never", "config.json": b"{}"})
    if case == "corrupt":
        server.repos["org/corrupt"] = Repo({"model.safetensors": b"\xff" * 64})
    if case == "truncated":
        server.repos["org/truncated"] = Repo({"model.safetensors": good[: len(good) - 100]})
    if case == "badconfig":
        server.repos["org/badconfig"] = Repo({**mlp_files(0), "config.json": b'{"model_type": "ml'})
    model_id = {"badrev": "org/ft-0", "bad__id": "org/bad--id"}.get(case, f"org/{case}")  # the last as a query answers it
    rows = hub.resolve_repos([model_id if case != "badrev" else {"id": model_id, "revision": "nope"}],
                             endpoint=server.endpoint)
    row = rows.iloc[0].to_dict()
    man = hub.fetch(row["id"], row["revision"], row["note"], endpoint=server.endpoint,
                    cache_dir=str(tmp_path / "c"))
    assert man["status"] == "rejected" and reason in man["reason"], man
    assert model_id in man["reason"]


def test_sharded_bf16_checkpoint_extracts_exactly(server, tmp_path):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 4, generator=g).bfloat16(), torch.randn(3, 6, generator=g).half()
    files = {"model-00001-of-00002.safetensors": save({"a.weight": a}),
             "model-00002-of-00002.safetensors": save({"b.weight": b}),
             "model.safetensors.index.json": json.dumps({"weight_map": {
                 "a.weight": "model-00001-of-00002.safetensors", "b.weight": "model-00002-of-00002.safetensors"}}).encode()}
    server.repos["org/sharded"] = Repo(files)
    man = hub.fetch("org/sharded", server.repos["org/sharded"].sha, endpoint=server.endpoint,
                    cache_dir=str(tmp_path / "c"))
    assert man["status"] == "ok" and man["tensors"]["a.weight"] == [[6, 4], "BF16"]
    extract_from_manifest(man, str(tmp_path / "s.zarr"), "org--sharded", {"id": "org/sharded"})
    st = ModelStore(tmp_path / "s.zarr")
    assert st.dtype("a.weight") == "bfloat16" and torch.equal(st.read("a.weight"), a)
    assert st.dtype("b.weight") == "float16" and torch.equal(st.read("b.weight"), b)


# ---------------------------------------------------------------------------- the workflow
def run(workdir, env, *args):
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory",
           str(workdir), "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise AssertionError(proc.stdout[-3000:] + proc.stderr[-6000:])
    return proc.stdout + proc.stderr


def counts(out):
    from test_workflow import job_counts
    return job_counts(out)


@pytest.mark.e2e
def test_hub_collection_end_to_end_and_growth(server, tmp_path):
    server.repos["org/ft-odd"] = Repo(mlp_files(7, shapes={"fc1.weight": (16, 9), "fc1.bias": (16,),
                                                            "fc2.weight": (4, 16)}), tags=[TAG])
    server.repos["org/ft-pickle"] = Repo({"pytorch_model.bin": b"\x80\x04x", "config.json": b"{}"}, tags=[TAG])
    config = {"collections": {"hubby": {"source": "hub", "evaluator": "none",
                                        "query": {"author": "org", "filter": TAG},
                                        "split": {"heldout": ["org--ft-5"]}}},
              "subspace": {"max_k": 4, "layer_groups": 1}, "project": {"ks": [1, 2, 4]}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "HF_ENDPOINT": server.endpoint, "HF_HOME": str(tmp_path / "hf"),
           "HF_TOKEN": "hf_SECRETtoken123", "HF_HUB_DISABLE_TELEMETRY": "1"}
    run(tmp_path, env)
    res = tmp_path / "results" / "hubby"
    lock = pd.read_csv(res / "collection.tsv", sep="\t")
    assert len(lock) == 8
    rejected = pd.read_csv(res / "rejected.tsv", sep="\t")
    assert sorted(rejected["key"]) == ["org--ft-odd", "org--ft-pickle"]
    assert rejected.set_index("key").loc["org--ft-odd", "reason"].startswith("org/ft-odd: architecture differs")
    assert "only pickle checkpoints" in rejected.set_index("key").loc["org--ft-pickle", "reason"]
    assert (tmp_path / "hf" / "hub" / "models--org--ft-0").is_dir()  # HF_HOME respected
    g = zarr.open_group(str(res / "subspace" / "full" / "group-0.zarr"), mode="r")
    assert g.attrs["models"] == [f"org--ft-{i}" for i in range(5)]
    before = np.asarray(g["fc1.weight"]["eig_row"][...])

    # nothing new: a rerun asks nothing and does nothing
    n_requests = len(server.log)
    assert "Nothing to be done" in run(tmp_path, env, "-n")
    assert len(server.log) == n_requests

    # a new model appears on the Hub: only it is fetched and extracted after an explicit refresh
    server.repos["org/ft-new"] = Repo(mlp_files(42), tags=[TAG])
    gone = server.repos.pop("org/ft-1")  # disappeared from the Hub: its pinned copy stays
    config["collections"]["hubby"]["refresh"] = True
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    planned = counts(run(tmp_path, env, "-n"))
    assert planned["fetch"] == 1 and planned["extract"] == 1, planned
    group = "results/hubby/subspace/full/group-0.zarr"  # the stages after it were run above: time
    run(tmp_path, env, group)
    lock2 = pd.read_csv(res / "collection.tsv", sep="\t")
    assert list(lock2["key"])[:8] == list(lock["key"]) and lock2["key"].iloc[-1] == "org--ft-new"
    g = zarr.open_group(str(res / "subspace" / "full" / "group-0.zarr"), mode="r")
    assert "org--ft-new" in g.attrs["models"] and len(g.attrs["models"]) == 6
    assert "org--ft-1" in g.attrs["models"] and gone is not None
    grown = np.asarray(g["fc1.weight"]["eig_row"][...])
    sublog = (tmp_path / "logs" / "hubby" / "subspace" / "full" / "group-0.log").read_text()
    assert "fc1.weight: reusing the sums of 5 models, reading 1 new" in sublog
    assert not np.allclose(before, grown)

    # the incremental result equals a from-scratch run on the same lock
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "results" / "hubby").mkdir(parents=True)
    (fresh / "results" / "hubby" / "collection.tsv").write_text((res / "collection.tsv").read_text())
    (fresh / "config.yaml").write_text(yaml.safe_dump(config))
    server.repos["org/ft-1"] = gone  # a fresh machine has no cached copy: it must download
    run(fresh, {**env, "HF_HOME": str(tmp_path / "hf2")}, group)
    g2 = zarr.open_group(str(fresh / "results" / "hubby" / "subspace" / "full" / "group-0.zarr"), mode="r")
    for arr in ("eig_row", "eig_col", "mean", "gram_model"):
        np.testing.assert_allclose(g2["fc1.weight"][arr][...], g["fc1.weight"][arr][...], rtol=1e-10, atol=1e-12)

    # the token never reaches a log or a result
    for path in list((tmp_path / "results").rglob("*")) + list((tmp_path / "logs").rglob("*")):
        if path.is_file():
            assert b"hf_SECRETtoken123" not in path.read_bytes(), path


def test_a_hub_that_cannot_be_reached_fails_the_job_and_rejects_no_model(server, tmp_path, monkeypatch):
    """With the lock made and the Hub gone (stopped mid-run, or never started), fetching a model
    not in the cache raises one sentence naming the endpoint and HF_HUB_OFFLINE: never a
    rejection (rejections are cached, and a 404 is not what happened); resolving a query says
    the same instead of the HTTP client's traceback. A model already in the cache is still
    fetched from it offline."""
    import huggingface_hub.utils._http as http

    monkeypatch.setattr(http.time, "sleep", lambda s: None)  # huggingface_hub's retries, without the waits
    rows = hub.resolve_query({"author": "org", "filter": TAG}, endpoint=server.endpoint)
    cached = hub.fetch("org/ft-0", rows.loc[0, "revision"], endpoint=server.endpoint, cache_dir=str(tmp_path))
    assert cached["status"] == "ok"
    server.__exit__(None, None, None)  # stopped mid-run
    from huggingface_hub.utils import close_session

    close_session()  # its kept-alive connections would still reach the stopped server's threads
    for endpoint in (server.endpoint, "http://127.0.0.1:9"):  # and one that never ran
        with pytest.raises(hub.HubUnreachable, match=rf"the Hub at {endpoint} could not be reached.*HF_HUB_OFFLINE=1"):
            hub.fetch("org/ft-1", rows.loc[1, "revision"], endpoint=endpoint, cache_dir=str(tmp_path))
        with pytest.raises(hub.HubUnreachable, match="could not be reached"):
            hub.resolve_query({"author": "org"}, endpoint=endpoint)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    again = hub.fetch("org/ft-0", rows.loc[0, "revision"], endpoint=server.endpoint, cache_dir=str(tmp_path))
    assert again["status"] == "ok" and again["files"] == cached["files"]
