"""Benchmark: hundreds of small local models end to end, adding 10, and a rerun with nothing new.

For each N: N local model folders of 1 MiB each (a 512×384 and a 256×256 float32 matrix: a
shared mean plus each model's own spread), the whole workflow from scratch (`snakemake --cores 2`,
evaluator none, nulls off: this measures the pipeline's own costs, start-ups above all; the
rotation null's cost is N·dim·r² per draw and is measured in BENCHMARKS' subspace sections),
then 10 models added, then a rerun with nothing new. Prints wall time and jobs per run; with
``--per-model`` also the fresh run with a job per model (``batch: 1``), as before batching.

    .venv/bin/python bench/many_models.py [--models 100 500] [--per-model 100] [--write]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from incremental import run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def write_model(folder: Path, seed: int) -> None:
    g, shared = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(12345)
    folder.mkdir(parents=True)
    tensors = {name: torch.randn(*shape, generator=shared) + 0.1 * torch.randn(*shape, generator=g)
               for name, shape in {"mlp.up.weight": (512, 384), "attn.out.weight": (256, 256)}.items()}
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "bench"}))


def case(work: Path, n: int, batch: int | None, grow: bool) -> list[tuple]:
    shutil.rmtree(work, ignore_errors=True)
    for i in range(n):
        write_model(work / "models" / f"m{i:04d}", i)
    spec = {"source": "local", "path": str(work / "models"), "evaluator": "none"}
    if batch is not None:
        spec["batch"] = batch
    config = {"collections": {"many": spec}, "align": {"enabled": False}, "export": {"ks": []},
              "subspace": {"max_k": 16, "gaussian_null": False, "rotation_null": False},
              "project": {"ks": [4, 16]}, "report": {"k": 16}}
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    label = f"batch {batch}" if batch else "default batches (32)"
    rows = [(f"fresh run, {label}", n, *run(work))]
    if grow:
        for i in range(n, n + 10):
            write_model(work / "models" / f"m{i:04d}", i)
        rows.append(("add 10 models", n + 10, *run(work)))
        rows.append(("rerun, nothing new", n + 10, *run(work)))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, nargs="+", default=[100, 500])
    ap.add_argument("--per-model", type=int, nargs="*", default=[100], help="N also run with a job per model")
    ap.add_argument("--workdir", default=str(ROOT / "bench" / "work" / "many"))
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args()
    lines = ["| run | models | wall s | jobs run | fetch+extract jobs |", "|---|---:|---:|---:|---:|"]
    for n in a.models:
        runs = case(Path(a.workdir), n, None, True) + (case(Path(a.workdir), n, 1, False) if n in a.per_model else [])
        for name, models, wall, jobs in runs:
            fx = sum(v for k, v in jobs.items() if k.startswith("fetch") or k == "extract")
            lines.append(f"| {name} | {models} | {wall:.1f} | {sum(jobs.values())} | {fx} |")
            print(lines[-1], flush=True)
    shutil.rmtree(a.workdir, ignore_errors=True)
    if a.write:
        from report import write_section

        write_section("Hundreds of small models", ".venv/bin/python bench/many_models.py --write "
                      f"--models {' '.join(map(str, a.models))} --per-model {' '.join(map(str, a.per_model))}",
                      "Local models of 1 MiB (two float32 matrices), the whole workflow with `snakemake --cores 2`, "
                      "evaluator none, nulls off, alignment off.\n\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
