"""Benchmark: how far a Ky Fan bound could cut the rotation null's cost (not used by the stage).

For every matrix of a finished run's collections (basis models, both modes exact), R = 99 null
draws three ways: exact (``core.sharing.draw_eigenvalues``: N Haar frames of dim × r, the full
Gram, its spectrum), the upper bound from each draw's first h frame columns
(``core.sharing.draw_area_bound``, h = 4, 8, 16), and the floor any exact draw pays, one
eigendecomposition of the draw's Gram. A draw whose bound is below the data's statistic cannot
reach it: its exceedance is known without the full draw, so the p-value is the full null's.
Prints the draws each h certifies and the milliseconds per draw (both modes, 1 thread).

    .venv/bin/python bench/null_bound.py [--results results] [--write]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from weightspace.core import sharing
from weightspace.store import ModelStore

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from report import basis_collections, publish  # noqa: E402
R, K, HEADS = 99, 16, (4, 8, 16)


def timed(f, *args):
    t0 = time.perf_counter()
    out = f(*args)
    return out, time.perf_counter() - t0


def matrix_row(Ws: list[torch.Tensor], g: torch.Generator) -> dict:
    m, n = Ws[0].shape
    S = sharing.padded([sharing.singular_values(W) for W in Ws])
    N, r = S.shape
    total = float((S ** 2).sum())
    data = [sum(W @ W.T for W in Ws), sum(W.T @ W for W in Ws)]
    T = float(np.mean([sharing.evr_area(torch.linalg.eigvalsh(G).flip(0).clamp_min(0), K, total) for G in data]))
    heads = [h for h in HEADS if h < r]
    exact, bound = [], {h: [] for h in heads}
    t_exact, t_bound, t_eig = 0.0, {h: 0.0 for h in heads}, 0.0
    for _ in range(R):
        areas, bounds = [], {h: [] for h in heads}
        for dim in (m, n):
            X = torch.randn(N, dim, r, generator=g, dtype=torch.float32).double()
            lam, t = timed(sharing.draw_eigenvalues, X, S)
            t_exact += t
            areas.append(float(sharing.evr_area(lam, K, total)))
            side = min(dim, N * r)
            A = torch.randn(side, side, dtype=torch.float64)
            t_eig += timed(torch.linalg.eigvalsh, A @ A.T)[1]
            for h in heads:
                b, t = timed(sharing.draw_area_bound, X, S, K, total, h)
                bounds[h].append(b)
                t_bound[h] += t
        exact.append(np.mean(areas))
        for h in heads:
            bound[h].append(np.mean(bounds[h]))
            assert bound[h][-1] >= exact[-1] - 1e-9
    exact = np.array(exact)
    cert = {h: int((np.array(bound[h]) < T).sum()) for h in heads}
    return {"shape": f"{m}×{n}", "N": N, "T": T, "null": exact.mean(), "reached": int((exact >= T).sum()),
            "cert": cert, "ms_exact": 1e3 * t_exact / R, "ms_bound": {h: 1e3 * t_bound[h] / R for h in heads},
            "ms_eig": 1e3 * t_eig / R}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default=str(ROOT / "results"))
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    lines = ["| collection | matrix | N | statistic / null mean | draws reaching it | certified below by the bound, "
             "h = 4 / 8 / 16 | ms per draw: exact / bound h = 8 / one eigendecomposition |",
             "|:--|:--|--:|--:|--:|--:|--:|"]
    for cname, view, paths in basis_collections(a.results):
        if view == "delta":
            continue  # adapters: the delta view's matrices are low rank, their draws already small
        stores = [ModelStore(p) for p in paths]
        g = torch.Generator().manual_seed(0)
        for name in stores[0].names():
            if len(stores[0].shape(name)) != 2 or min(stores[0].shape(name)) < 8:
                continue
            row = matrix_row([s.read(name).double() for s in stores], g)
            cert = " / ".join(str(row["cert"].get(h, "–")) for h in HEADS)
            lines.append(f"| {cname} | {name} {row['shape']} | {row['N']} | {row['T']:.3f} / {row['null']:.3f} | "
                         f"{row['reached']}/{R} | {cert} | {row['ms_exact']:.1f} / {row['ms_bound'].get(8, float('nan')):.1f}"
                         f" / {row['ms_eig']:.1f} |")
            print(lines[-1], flush=True)
    body = "\n".join(lines) + (
        "\n\nEach matrix of the basis models of a fresh `make run` (full models; 1 thread), R = 99 draws of both "
        "modes. Certified: draws whose Ky Fan bound (`core.sharing.draw_area_bound`: the exact spectrum of the "
        "draw's first h frame columns plus each model's next k squared singular values) is below the data's "
        "statistic, so that their exceedance is known without the full draw and the p-value is the full null's. "
        "Read: the bound certifies every draw of every shared matrix from h = 4 or 8, at 5–22× less than an "
        "exact draw (an exact draw of a 128×128 matrix pays for 34 square 128×128 frames), and of a matrix "
        "just above its null (the independent MLPs' fc2 and fc3, which the margin calls not shared) none: "
        "there the full draws are needed. Even with every draw certified it does not reach the goal of the "
        "previous section: 99 bounds of digits-mlp-shared's three matrices take ~0.5 s against 0.3 s for the "
        "rest of the stage (each still one eigendecomposition of a Gram as large as the data's own, last "
        "column), i.e. the null would fall from 96% to ~60% of the stage; and the z-score and the mean null "
        "spectrum the stage reports need exact draws, each as costly as the stage itself here. The stage "
        "does not use the bound; it is the measured next step for larger matrices, where a bound's frames "
        "and Gram cost ~h/r of an exact draw's.")
    publish("A Ky Fan bound on the rotation null's draws", "python bench/null_bound.py --write", body, a.write)


if __name__ == "__main__":
    main()
