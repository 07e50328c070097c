"""Rewrite the README's results table (between its markers) from results/summary.csv.

Run by `make run` after the workflow, so the README shows the numbers of the last demo run.
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


def main(summary="results/summary.csv", readme="README.md"):
    text = (ROOT / readme).read_text()
    new = table(pd.read_csv(ROOT / summary))
    pattern = re.compile(r"(<!-- summary:start -->\n).*?(\n<!-- summary:end -->)", re.S)
    if not pattern.search(text):
        sys.exit("README has no summary markers")
    (ROOT / readme).write_text(pattern.sub(lambda m: m[1] + new + m[2], text))


if __name__ == "__main__":
    main(*sys.argv[1:])
