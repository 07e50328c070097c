"""The ready Hub configs dry-run offline against a local Hub serving listings shaped like the
real collections (synthetic repos with the real naming scheme and tags)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hubserver import FakeHub, Repo
from test_workflow import job_counts

ROOT = Path(__file__).resolve().parents[1]
LORA = {"adapter_config.json": b'{"peft_type": "LORA", "r": 16, "lora_alpha": 16}',
        "adapter_model.safetensors": b"\0" * 16}
FULL = {"config.json": b"{}", "model.safetensors": b"\0" * 16}

CASES = {
    "lots-of-loras": ({f"Lots-of-LoRAs/Mistral-7B-Instruct-v0.2-4b-r16-task{t}": Repo(dict(LORA))
                       for t in (1, 2, 20, 132, 581, 909, 1344, 1500)}, 2 * 32),
    "vit-base-finetunes": ({f"user{i}/vit-base-ft-{i}": Repo(dict(FULL), tags=[
        "base_model:finetune:google/vit-base-patch16-224"]) for i in range(9)}, 24),
    "llama3-8b-finetunes": ({f"lab{i}/llama-3-8b-ft": Repo(dict(FULL), tags=[
        "base_model:finetune:meta-llama/Meta-Llama-3-8B"]) for i in range(5)}, 64),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_ready_config_dry_runs_offline(name, tmp_path):
    repos, subspace_jobs = CASES[name]
    with FakeHub() as hub:
        hub.repos.update(repos)
        hub.repos["someone/unrelated"] = Repo(dict(FULL), tags=["other"])
        env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf")}
        cmd = [sys.executable, "-m", "snakemake", "-n", "--snakefile", str(ROOT / "Snakefile"),
               "--directory", str(tmp_path), "--configfile", str(ROOT / "config" / "collections" / f"{name}.yaml"),
               "--cores", "2"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    counts = job_counts(proc.stdout)
    assert counts["fetch"] == len(repos) and counts["extract"] == len(repos), counts
    assert counts["subspace"] == subspace_jobs, counts
    assert "someone--unrelated" not in proc.stdout  # only the query's repos are planned
    assert not (tmp_path / "results").exists()  # a dry run writes nothing, not even the lock
    if name == "lots-of-loras":  # 8 repos, 4 held out by the split: the subspace reads the 4 others
        block = proc.stdout.split("rule subspace:")[1].split("output:")[0]
        assert block.count(".zarr") == 4, block
