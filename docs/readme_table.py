"""Rewrite the README's result tables (between their markers) from the run's results.

``<!-- verdict:start -->`` … from results/summary.csv (the verdict per collection and view);
``<!-- summary:start -->`` … from results/methods.csv (every method at the report's k); ``<!-- adapt:{c}:start -->`` … and
``<!-- merge:{c}:start -->`` … from results/{c}/adapt|merge/{view}/ where they exist (a table
whose collection did not run is left as it is). Run by `make run` and `make realism`.
"""

import re
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
ORDER = {"original": 0, "base_only": 1, "projected": 2, "svd": 3, "random": 4, "mean": 5}


def table(summary: pd.DataFrame) -> str:
    s = summary[summary["method"].isin(ORDER)]
    acc = s.pivot_table(index=["collection", "view", "method"], columns="split", values="accuracy")
    n = s.pivot_table(index=["collection", "view", "method"], columns="split", values="models")
    comp = s[s["split"] == "basis"].set_index(["collection", "view", "method"])["compression"]
    lines = ["| collection | view | method | basis | held-out | bytes vs originals |", "|:--|:--|:--|--:|--:|--:|"]
    rows = sorted(acc.index, key=lambda r: (r[0], r[1], ORDER[r[2]]))
    for c, v, m in rows:
        b = comp.get((c, v, m))
        lines.append(f"| {c} | {v} | {m} | {acc.loc[(c, v, m), 'basis']:.3f} | {acc.loc[(c, v, m), 'heldout']:.3f} "
                     f"| {'' if pd.isna(b) else f'{b:.3f}'} |")
    counts = n.xs("original", level="method").groupby(level="collection").max()
    lines += ["", "Models (basis / held-out): " + ", ".join(
        f"{c} {int(r['basis'])} / {int(r['heldout'])}" for c, r in counts.iterrows()) + "."]
    return "\n".join(lines)


def verdict_table(v: pd.DataFrame) -> str:
    lines = ["| collection | view | verdict | matrices shared | median excess k=4 / 16 "
             "| ‖W−μ‖/‖W‖ basis / held-out | held-out accuracy projected / original |",
             "|:--|:--|:--|--:|--:|--:|--:|"]
    for _, r in v.iterrows():
        acc = (f"{r['heldout_accuracy_projected']:.3f} / {r['heldout_accuracy_original']:.3f}"
               if "heldout_accuracy_projected" in r and pd.notna(r["heldout_accuracy_projected"]) else "–")
        lines.append(f"| {r['collection']} | {r['view']} | **{r['verdict']}** | {int(r['matrices_shared'])} of "
                     f"{int(r['matrices_tested'])} | {r['median_excess_k4']:.3f} / {r['median_excess_k16']:.3f} "
                     f"| {r['mean_only_error_basis']:.3f} / {r['mean_only_error_heldout']:.3f} | {acc} |")
    r = v.iloc[0]
    lines += ["", f"FDR {r['fdr']}, margin {r['margin']}, projected models at k = {int(r['k'])}; "
              "per-matrix numbers in `results/{c}/subspace/{view}/sharing.csv`."]
    return "\n".join(lines)


def export_table() -> str | None:
    """Bytes of the delta view's PEFT exports against the adapters they stand for."""
    found = sorted((ROOT / "results").glob("*/export/delta/k*-sizes.csv"))
    if not found:
        return None
    lines = ["| collection | k | own adapter rank | own adapter / original | with its share of shared/ |",
             "|:--|--:|--:|--:|--:|"]
    for f in found:
        t = pd.read_csv(f)
        lines.append(f"| {f.parts[-4]} | {int(t['k'].iloc[0])} | {int(t['rank'].max())} "
                     f"| {(t['export_bytes'] / t['original_bytes']).mean():.2f} | {t['ratio_to_original'].mean():.2f} |")
    return "\n".join(lines)


def adapt_table(summary: pd.DataFrame) -> str:
    """Rows: method (k); columns: training-set sizes; cells: test accuracy ± seeds' std."""
    sizes = sorted(summary["n_train"].unique())
    lines = ["| method | k | trainable | " + " | ".join(f"{n} examples" for n in sizes) + " |",
             "|:--|--:|--:|" + "--:|" * len(sizes)]
    summary = summary.assign(order=summary["method"].map(lambda m: METHODS_ADAPT.index(m) if m in METHODS_ADAPT else 99))
    for (method, k), d in summary.sort_values(["order", "k"]).groupby(["method", "k"], sort=False):
        by = d.set_index("n_train")
        cells = [f"{by.loc[n, 'accuracy']:.3f} ± {by.loc[n, 'seed_std']:.3f}" if n in by.index else "" for n in sizes]
        lines.append(f"| {method} | {k or ''} | {int(by['trainable'].iloc[-1])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


METHODS_ADAPT = ["none-base", "none-mean", "coef-base", "coef-mean", "random", "tinylora", "fourierft", "vera",
                 "lora", "head", "full"]


def merge_table(summary: pd.DataFrame, diagnostics: pd.DataFrame) -> str:
    from weightspace.merge import testbed_verdict

    lines = ["| method | λ | tuned on | normalised accuracy (mean) | (worst task) |", "|:--|--:|:--|--:|--:|"]
    for _, r in summary.iterrows():
        lam = {"mean": "1/N", "subspace_mean": "–"}.get(r["method"], f"{r['lam']:g}")
        lines.append(f"| {r['method']} | {lam} | {r['tuned_on']} | {r['normalised_mean']:.3f} "
                     f"| {r['normalised_min']:.3f} |")
    ok, verdict = testbed_verdict(diagnostics)
    lines += ["", f"{int(summary['tasks'].iloc[0])} models merged, task vectors against the "
              f"{summary['reference'].iloc[0]}; largest |W_subspace mean − W_mean| = "
              f"{summary['subspace_mean_vs_mean'].iloc[0]:.2g}. "
              f"Testbed: {verdict}."]
    return "\n".join(lines)


def replace(text: str, name: str, new: str) -> str:
    pattern = re.compile(rf"(<!-- {re.escape(name)}:start -->\n).*?(<!-- {re.escape(name)}:end -->)", re.S)
    return pattern.sub(lambda m: m[1] + new + "\n" + m[2], text)


def main(summary="results/summary.csv", methods="results/methods.csv", readme="README.md", stages_only=False):
    text = (ROOT / readme).read_text()
    if "<!-- summary:start -->" not in text or "<!-- verdict:start -->" not in text:
        sys.exit("README has no summary or verdict markers")
    if not stages_only:
        text = replace(text, "verdict", verdict_table(pd.read_csv(ROOT / summary)))
        text = replace(text, "summary", table(pd.read_csv(ROOT / methods)))
        exports = export_table()
        if exports and "<!-- exports:start -->" in text:
            text = replace(text, "exports", exports)
    for stage, c in re.findall(r"<!-- (adapt|merge):([A-Za-z0-9_.-]+):start -->", text):
        found = sorted((ROOT / "results" / c / stage).glob("*/summary.csv"))
        if not found:
            continue
        s = pd.read_csv(found[0])
        new = adapt_table(s) if stage == "adapt" else merge_table(s, pd.read_csv(found[0].parent / "diagnostics.csv"))
        text = replace(text, f"{stage}:{c}", new)
    (ROOT / readme).write_text(text)


if __name__ == "__main__":  # --stages: only the adapt/merge tables (make realism: its summary.csv is not the demo's)
    main(stages_only="--stages" in sys.argv[1:])
