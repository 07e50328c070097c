"""Benchmark: adding 1 model to a collection of 100, against a full run.

Writes a local collection of N HF-style model folders (two matrices of realistic shape each),
runs the workflow from scratch, adds one model folder, runs again, and prints a table of jobs
run and wall time per run, and the subspace job's own time and peak RSS (Snakemake's
benchmark files). Usage:

    .venv/bin/python bench/incremental.py [--models 100] [--rows 384] [--cols 1536]
"""

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import yaml
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]


def write_model(folder: Path, seed: int, rows: int, cols: int) -> None:
    g = torch.Generator().manual_seed(seed)
    shared = torch.Generator().manual_seed(12345)
    folder.mkdir(parents=True)
    tensors = {}
    for name, shape in {"mlp.up.weight": (cols, rows), "attn.out.weight": (rows, rows)}.items():
        tensors[name] = torch.randn(*shape, generator=shared) + 0.1 * torch.randn(*shape, generator=g)
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "bench"}))


def run(workdir: Path, *extra: str) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory",
           str(workdir), "--configfile", str(workdir / "config.yaml"), "--cores", "2", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(proc.stderr[-4000:])
    out = proc.stdout + proc.stderr
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out.split("Job stats:")[1], re.M)) if "Job stats:" in out else {}
    return wall, {k: int(v) for k, v in counts.items() if k not in ("job", "total")}


def subspace_bench(workdir: Path) -> tuple[float, float]:
    t = pd.read_csv(next((workdir / "benchmarks").rglob("group-0.tsv")), sep="\t")
    return float(t["s"].iloc[0]), float(t["max_rss"].iloc[0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--rows", type=int, default=384)
    ap.add_argument("--cols", type=int, default=1536)
    ap.add_argument("--workdir", default=str(ROOT / "bench" / "work" / "incremental"))
    a = ap.parse_args()
    work = Path(a.workdir)
    shutil.rmtree(work, ignore_errors=True)
    for i in range(a.models):
        write_model(work / "models" / f"m{i:04d}", i, a.rows, a.cols)
    config = {"collections": {"bench": {"source": "local", "path": str(work / "models"), "evaluator": "none",
                                        "split": {"heldout_fraction": 0.0}}},
              "subspace": {"max_k": 16, "layer_groups": 1, "gaussian_null": False, "rotation_null": False,
                           "threads": 2},
              "project": {"ks": [4, 16]}, "report": {"k": 16}}
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    rows = []
    wall, jobs = run(work)
    rows.append(("full run", a.models, wall, jobs, *subspace_bench(work)))
    write_model(work / "models" / f"m{a.models:04d}", a.models, a.rows, a.cols)
    wall, jobs = run(work)
    rows.append(("add 1 model", a.models + 1, wall, jobs, *subspace_bench(work)))
    shutil.rmtree(work / "results" / "bench" / "cache")
    wall, jobs = run(work, "--forcerun", "subspace")
    rows.append(("same 101, sums from scratch (cache deleted)", a.models + 1, wall, jobs, *subspace_bench(work)))
    lines = [f"{a.models} local models, tensors {a.cols}x{a.rows} and {a.rows}x{a.rows} float32, "
             "whole workflow (`snakemake --cores 2`), evaluator none, nulls off.", "",
             "| run | models | wall s | jobs run | fetch | extract | subspace job s | subspace peak RSS MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, n, wall, jobs, s, rss in rows:
        lines.append(f"| {name} | {n} | {wall:.1f} | {sum(jobs.values())} | {jobs.get('fetch', 0)} | "
                     f"{jobs.get('extract', 0)} | {s:.1f} | {rss:.0f} |")
    print("\n".join(lines))
    sys.path.insert(0, str(ROOT / "bench"))
    from report import write_section
    write_section("Adding one model to a collection", ".venv/bin/python bench/incremental.py", "\n".join(lines))


if __name__ == "__main__":
    main()
