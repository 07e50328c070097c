"""The workflow through snakemake-executor-plugin-slurm on a real one-node SLURM cluster.

Skips, with the reason, where SLURM cannot be started (packages missing, not root); .ci/run
installs the packages (Debian slurmctld, slurmd, slurm-client, munge).
"""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from slurmcluster import ClusterUnavailable, SlurmCluster

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {"collections": {"s": {"source": "zoo",
                                "zoo": {"kind": "mlp", "count": 5, "hidden": [16], "steps": 100, "lr": 0.01},
                                "split": {"heldout": ["model-004"]},
                                "fetch_on_submit_host": True}},
          "subspace": {"max_k": 4, "layer_groups": 1, "threads": 1},
          "project": {"ks": [1, 4]}, "export": {"ks": []}, "align": {"enabled": False}}
# the stages compared with a local run (every rule kind up to evaluate; figures and the
# report are the same code on either executor, and each SLURM job costs seconds of polling)
TARGETS = ["results/s/evaluate/full/metrics.parquet", "results/s/subspace/full/spectra.parquet"]

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="snakemake-executor-plugin-slurm not installed")
    try:
        c = SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    except ClusterUnavailable as exc:
        pytest.skip(f"no SLURM cluster here: {exc}")
    yield c
    c.stop()


def run(workdir, env, *args):
    (workdir / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    cmd = [sys.executable, "-m", "snakemake", *TARGETS, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


def test_workflow_runs_through_slurm_and_matches_a_local_run(cluster, tmp_path):
    on_slurm, local = tmp_path / "slurm", tmp_path / "local"
    on_slurm.mkdir()
    local.mkdir()
    out = run(on_slurm, cluster.env, "--workflow-profile", str(ROOT / "profiles" / "slurm"),
              "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1",
              "--seconds-between-status-checks", "1", "--slurm-keep-successful-logs", "--jobs", "4",
              "--default-resources", f"slurm_partition={cluster.partition}", "runtime=10", "mem_mb=1000")
    job_ids = set(re.findall(r"SLURM jobid (\d+)", out))
    assert len(job_ids) >= 5, out[-3000:]  # zoo, fetch + extract, subspace, ... went through SLURM
    logs = list((on_slurm / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert {p.stem for p in logs} & job_ids, "the plugin's per-job logs carry the SLURM job ids"
    submitted = {p.name for p in (on_slurm / ".snakemake" / "slurm_logs").iterdir()}
    assert {"rule_zoo", "rule_fetch_extract_s", "rule_subspace", "rule_evaluate"} <= submitted, submitted
    # local rules never reach SLURM: the collection listing (fetch_on_submit_host concerns the
    # per-model fetch of Hub and local sources; a zoo's fetch is part of its extract job)
    assert "rule_collection_listing" not in submitted, submitted
    squeue = subprocess.run(["squeue", "-h"], capture_output=True, text=True, env=cluster.env).stdout
    assert squeue.strip() == ""  # nothing left queued or running
    run(local, cluster.env, "--cores", "2")
    for rel in ["results/s/evaluate/full/metrics.parquet"]:
        a, b = pd.read_parquet(on_slurm / rel), pd.read_parquet(local / rel)
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9)
    spectra = [pd.read_parquet(d / "results/s/subspace/full/spectra.parquet") for d in (on_slurm, local)]
    np.testing.assert_allclose(spectra[0]["eigenvalue"], spectra[1]["eigenvalue"], rtol=1e-9, atol=1e-12)
