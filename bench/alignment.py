"""Benchmark: alignment of all pairs of N models, packed (align.pack + align.scores) vs the pairwise loop.

    .venv/bin/python bench/alignment.py [--models 100 500 1000] [--probes 1000] [--dim 768] [--write]

Each (N, metric) row runs in a fresh process, so its peak memory is its own. The stage's path:
every model's features → its sides → the pack (kernels written once into an M × n² float32
matrix; neighbour lists as keys or sorted rows), computed as the sides come (``per model``
column), then the scores of all pairs (``all pairs``: one syrk for the kernels; O(n·k) per pair
for the k-NN metrics, both directions for the asymmetric cycle k-NN and CKNNA). The loop is
``align.PAIR`` over pairs of the same sides (ordered pairs for the asymmetric metrics), timed on
``--sample`` pairs among the first models and extrapolated to all pairs; ``max diff`` is the
largest difference between the two on those pairs (float32 kernels: ~1e-7). ``--write`` replaces
the "Alignment of all pairs" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import subprocess
import sys
import time

import torch

from weightspace.core import align

METRICS = ("mutual_knn", "cycle_knn", "cka", "unbiased_cka", "cknna", "svcca")


def features(N: int, n: int, d: int, seed: int):
    """N models' features, made one at a time: a shared latent structure plus noise."""
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(n, 16, generator=g, dtype=torch.float64)
    for _ in range(N):
        mix = torch.randn(16, d, generator=g, dtype=torch.float64)
        yield align.prepare(latent @ mix + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64))


class Sides:
    def __init__(self, metric, N, n, d):
        self.metric, self.N, self.n, self.d = metric, N, n, d

    def __len__(self):
        return self.N

    def __iter__(self):
        return (align.sides(self.metric, X, 10, 10) for X in features(self.N, self.n, self.d, self.N))


def one(N: int, n: int, d: int, metric: str, sample: int) -> dict:
    from weightspace.runtime import return_large_frees

    ordered = metric not in align.SYMMETRIC
    m = min(N, 64)  # the loop first, with glibc's default malloc (its n² temporaries reuse the heap)
    sides = [align.sides(metric, X, 10, 10) for X in features(m, n, d, N)]
    pairs = list(itertools.permutations(range(m), 2) if ordered else itertools.combinations(range(m), 2))
    g = torch.Generator().manual_seed(0)
    chosen = pairs if len(pairs) <= sample else [pairs[i] for i in torch.randperm(len(pairs), generator=g)[:sample]]
    t0 = time.perf_counter()
    ref = [align.PAIR[metric](sides[i], sides[j]) for i, j in chosen]
    all_pairs = N * (N - 1) // (1 if ordered else 2)
    t_loop = (time.perf_counter() - t0) * all_pairs / len(chosen)
    del sides
    return_large_frees()  # then the stage's path, as the align jobs run it
    t0 = time.perf_counter()
    packed = align.pack(metric, Sides(metric, N, n, d))
    t_pack = time.perf_counter() - t0
    t0 = time.perf_counter()
    M = align.scores(packed)
    t_pairs = time.perf_counter() - t0
    del packed
    diff = max(abs(float(M[i, j]) - r) for (i, j), r in zip(chosen, ref))
    return {"N": N, "metric": metric, "pack_s": t_pack, "pairs_s": t_pairs, "loop_s": t_loop, "timed": len(chosen),
            "pairs": all_pairs, "speedup": t_loop / t_pairs, "max_diff": diff,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, nargs="+", default=[100, 500, 1000])
    ap.add_argument("--probes", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--sample", type=int, default=300, help="pairs timed in the loop (extrapolated to all)")
    ap.add_argument("--metrics", nargs="+", default=list(METRICS))
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--one", nargs=2, metavar=("N", "METRIC"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        torch.set_num_threads(2)
        print(json.dumps(one(int(args.one[0]), args.probes, args.dim, args.one[1], args.sample)))
        return
    rows = []
    for N in args.models:
        for metric in args.metrics:
            out = subprocess.run([sys.executable, __file__, "--one", str(N), metric, "--probes", str(args.probes),
                                  "--dim", str(args.dim), "--sample", str(args.sample)], capture_output=True, text=True)
            if out.returncode:
                print(out.stderr[-2000:])
                raise SystemExit(f"N={N} {metric} failed")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(r)
            print(f"N={N:4d} {metric:13s} per model {r['pack_s']:7.1f} s  all pairs {r['pairs_s']:7.2f} s  "
                  f"loop {r['loop_s']:8.1f} s ({r['timed']} of {r['pairs']} pairs timed)  ×{r['speedup']:6.1f}  "
                  f"max diff {r['max_diff']:.1e}  peak {r['peak_mb']:.0f} MB", flush=True)
    if args.write:
        from report import write_section

        lines = ["| N | metric | every model's sides + pack (s) | all pairs (s) | pairwise loop (s) | speed-up | max diff "
                 "| peak memory (MB) |", "|--:|:--|--:|--:|--:|--:|--:|--:|"]
        for r in rows:
            lines.append(f"| {r['N']} | {r['metric']} | {r['pack_s']:.1f} | {r['pairs_s']:.2f} | {r['loop_s']:.1f} "
                         f"(from {r['timed']} of {r['pairs']} pairs) | {r['speedup']:.0f}× | {r['max_diff']:.0e} | "
                         f"{r['peak_mb']:.0f} |")
        command = (f"python bench/alignment.py --write --models {' '.join(map(str, args.models))} --probes {args.probes} "
                   f"--dim {args.dim} --sample {args.sample} --metrics {' '.join(args.metrics)}")
        write_section("Alignment of all pairs", command, "\n".join(lines) + NOTE.format(n=args.probes, d=args.dim))


NOTE = """

n = {n} probes, d = {d}, k = 10, 2 threads per row, each row in its own process (peak memory is
that process's maximum resident set, the features and sides included); the loop runs first with
glibc's default malloc, the packed path after `runtime.return_large_frees` (as the align jobs:
large frees returned to the system, so memory stays flat in N). Per model: features,
sides and the pack (CKA kernels written once into an M × n² float32 matrix). All pairs: the
kernel metrics are one syrk of that matrix; mutual k-NN a float32 product of 0/1 indicators over
the union of the models' neighbour pairs; cycle k-NN a gather of n·k indicator bits per ordered
pair; CKNNA its O(n·k) sorted-neighbour form (n·k numbers per model, no n² mask), both
directions; SVCCA batched 10×10 singular values (bases from the smaller Gram). The loop is the
pairwise reference on the same sides (ordered pairs for cycle k-NN and CKNNA)."""


if __name__ == "__main__":
    main()
