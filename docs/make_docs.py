"""``make docs``: the documentation's tables and figures from a finished run, and
config/README.md from config/schema.yaml. Never run by ``make run`` (a run leaves the tree as
it found it).

Tables between markers, in README.md, docs/results.md and docs/guide.md:
``<!-- verdict:start -->`` … from results/summary.csv (the verdict per collection and view);
``<!-- summary:start -->`` … from results/methods.csv (every method at the report's k);
``<!-- exports:start -->`` … from the delta exports' k{k}-sizes.csv;
``<!-- adapt:{c}:start -->`` and ``<!-- merge:{c}:start -->`` … from results/{c}/adapt|merge/{view}/
where they exist (a table whose collection did not run is left as it is; in the tables that
gather several configs' runs, exports, transfer and across, the rows no run here made are kept
and named). Figures: FIGURES,
each copied when the run made it. "results/" is the demo's results/ or another config's
runs/<name>/results/ (``make run CONFIG=…``), the latest run's copy of a file (``found``); the
run-wide figures (results/figures/) are the demo's (``figure_source``).
"""

import json
import re
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


def heldout_label(n) -> str:
    """A held-out number's caveat: it rests on one or two models."""
    return f" (n = {int(n)}!)" if pd.notna(n) and int(n) <= 2 else ""


def verdict_table(v: pd.DataFrame) -> str:
    lines = ["| collection | view | verdict | matrices shared | flips at margin | median excess k=4 / 16 "
             "| ‖W−μ‖/‖W‖ basis / held-out | held-out accuracy projected / original |",
             "|:--|:--|:--|--:|--:|--:|--:|--:|"]
    for _, r in v.iterrows():
        n_held = r.get("models_heldout")
        acc = (f"{r['heldout_accuracy_projected']:.3f} / {r['heldout_accuracy_original']:.3f}{heldout_label(n_held)}"
               if "heldout_accuracy_projected" in r and pd.notna(r["heldout_accuracy_projected"]) else "–")
        uncallable = int(r.get("matrices_uncallable", 0) or 0)
        shared = f"{int(r['matrices_shared'])} of {int(r['matrices_tested'])}" + (
            f" ({uncallable} cannot be called)" if uncallable else "")
        flip = r.get("flip_margin")
        flip = "never shared" if pd.isna(flip) else f"{flip:.3f}"
        lines.append(f"| {r['collection']} | {r['view']} | **{r['verdict']}** | {shared} | {flip} "
                     f"| {r['median_excess_k4']:.3f} / {r['median_excess_k16']:.3f} "
                     f"| {r['mean_only_error_basis']:.3f} / {r['mean_only_error_heldout']:.3f}{heldout_label(n_held)} | {acc} |")
    r = v.iloc[0]
    floor = f"; p floor {r['p_floor']:.3f}, smallest share BH can call {r['min_detectable_share']:.2f}" \
        if "p_floor" in r and pd.notna(r["p_floor"]) else ""
    lines += ["", f"FDR {r['fdr']}, margin {r['margin']}{floor}; projected models at k = {int(r['k'])}. "
              "*Flips at margin*: the view is called shared at every margin up to this one and not beyond "
              "(\"never shared\": not even at margin 0). A matrix *cannot be called* when even N identical "
              "copies of it would not beat its rotation null by the margin (left out of the share). "
              "(n = 1!) marks held-out numbers that rest on one or two models. "
              "Per-matrix numbers in `results/{c}/subspace/{view}/sharing.csv`."]
    return "\n".join(lines)


def transfer_table(t: pd.DataFrame) -> str:
    """One row per transfer pair (results/transfer/summary.csv)."""
    lines = ["| A (subspace) → B (models) | k | verdict | modes transfer | captured: A's / B's own / random "
             "| above chance | B held-out error: A's / own / random / mean "
             "| B held-out accuracy: A's (A's mean) / own / random / original |",
             "|:--|--:|:--|--:|--:|--:|--:|--:|"]
    for _, r in t.iterrows():
        has_proj = "error_transfer" in r and pd.notna(r.get("error_transfer"))
        err = (f"{r['error_transfer']:.3f} / {r['error_own']:.3f} / {r['error_random']:.3f} / {r['error_mean']:.3f}"
               if has_proj else "– (other architectures)")
        acc = (f"{r['accuracy_transfer']:.3f} ({r['accuracy_transfer_a_mean']:.3f}) / {r['accuracy_own']:.3f} / "
               f"{r['accuracy_random']:.3f} / {r['accuracy_original']:.3f}{heldout_label(r.get('models'))}"
               if has_proj and "accuracy_transfer" in r and pd.notna(r.get("accuracy_transfer")) else "–")
        lines.append(f"| {r['a']} → {r['b']} | {int(r['k'])} | **{r['verdict']}** "
                     f"| {int(r['rows_transfer'])} of {int(r['rows_tested'])} "
                     f"({r['where']}) | {r['median_captured']:.3f} / {r['median_captured'] / r['median_ratio']:.3f} / "
                     f"{r['median_random']:.3f} | {r['median_above_chance']:.2f} | {err} | {acc} |")
    lines += ["", "k: directions per mode (the run's report.k); medians over the tested matrix modes "
              "(B's own: captured / ratio). "
              "*Above chance*: (A's − random) / (B's own − random), 0 for a random k-subspace, 1 for B's own. "
              "Errors ‖Ŵ − W‖/‖W‖ and accuracies of B's held-out models projected onto A's subspace with B's mean "
              "(A's mean in brackets), B's own subspace, a random one, the mean alone. "
              "Per mode: `results/transfer/{A}~{B}/energy.csv`."]
    return "\n".join(lines)


def roots() -> list[Path]:
    """Where runs wrote results: the demo's results/, and each other config's runs/<name>/results/
    (``make run CONFIG=…``)."""
    return [ROOT / "results", *sorted((ROOT / "runs").glob("*/results"))]


def found(pattern: str) -> list[Path]:
    """Every file matching ``pattern`` under any root, the latest run's where one path is in
    several (by modification time), sorted by that path."""
    best: dict[str, Path] = {}
    for root in roots():
        for f in root.glob(pattern):
            rel = str(f.relative_to(root))
            if rel not in best or f.stat().st_mtime > best[rel].stat().st_mtime:
                best[rel] = f
    return [best[k] for k in sorted(best)]


def latest(rel: str) -> Path | None:
    """The latest run's copy of ``rel`` (a path under results/), or None."""
    got = found(rel)
    return got[0] if got else None


def figure_source(rel: str) -> Path | None:
    """Where a docs figure is copied from: a run-wide figure (results/figures/: the overview, the
    serving and transfer matrix figures, one per run whatever its collections) from the demo's
    results/ only, so that another config's later run does not replace the demo's; a collection's
    or a pair's figure from the latest run that made it."""
    if rel.startswith("figures/"):
        path = ROOT / "results" / rel
        return path if path.exists() else None
    return latest(rel)


def export_table() -> str | None:
    """Bytes of the delta view's PEFT exports against the adapters they stand for."""
    sizes = found("*/export/delta/k*-sizes.csv")
    if not sizes:
        return None
    lines = ["| collection | k | own adapter rank | own adapter / original | with its share of shared/ |",
             "|:--|--:|--:|--:|--:|"]
    for f in sizes:
        t = pd.read_csv(f)
        lines.append(f"| {f.parts[-4]} | {int(t['k'].iloc[0])} | {int(t['rank'].max())} "
                     f"| {(t['export_bytes'] / t['original_bytes']).mean():.2f} | {t['ratio_to_original'].mean():.2f} |")
    return "\n".join(lines)


def adapt_table(summary: pd.DataFrame) -> str:
    """Rows: method (k); columns: training-set sizes; cells: test accuracy ± 95% CI over task × seed
    pairs, the chosen learning rate(s) ([edge] where one stayed on its grid's edge)."""
    sizes = sorted(summary["n_train"].unique())
    lines = ["| method | k | trainable | " + " | ".join(f"{n} examples" for n in sizes) + " |",
             "|:--|--:|--:|" + "--:|" * len(sizes)]
    summary = summary.assign(order=summary["method"].map(lambda m: METHODS_ADAPT.index(m) if m in METHODS_ADAPT else 99))
    for (method, k), d in summary.sort_values(["order", "k"]).groupby(["method", "k"], sort=False):
        by = d.set_index("n_train")
        def cell(n):
            r = by.loc[n]
            edge = " [edge]" if r["lr_at_edge"] else ""
            lrs = "" if pd.isna(r["lrs"]) or not str(r["lrs"]).strip() else f" (lr {r['lrs']}{edge})"
            return f"{r['accuracy']:.3f} ± {r['ci95']:.3f}{lrs}"

        cells = [cell(n) if n in by.index else "" for n in sizes]
        lines.append(f"| {method} | {k or ''} | {int(by['trainable'].iloc[-1])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


METHODS_ADAPT = ["none-base", "none-mean", "coef-base", "coef-mean", "random", "tinylora", "fourierft", "vera",
                 "lora", "head", "full"]


def paired_table(paired: pd.DataFrame) -> str:
    """Paired differences of the adapt stage: one row per comparison, columns per size and k."""
    cols = sorted({(r.n_train, r.k) for r in paired.itertuples()})
    if "tasks" not in paired:
        paired = paired.assign(tasks="all")
    lines = ["| tasks | comparison (paired on task × seed) | " + " | ".join(f"{n} ex., k={k}" for n, k in cols) + " |",
             "|:--|:--|" + "--:|" * len(cols)]
    for (tasks, comp), d in paired.groupby(["tasks", "comparison"], sort=False):
        if "best PEFT" in comp:
            continue  # the best of the two tuners: one of the rows above
        by = d.set_index(["n_train", "k"])
        cells = [f"{by.loc[c, 'mean']:+.3f} ± {by.loc[c, 'ci95']:.3f} ({int(by.loc[c, 'wins'])}/{int(by.loc[c, 'losses'])})"
                 if c in by.index else "" for c in cols]
        lines.append(f"| {tasks} | {comp} | " + " | ".join(cells) + " |")
    return "\n".join(lines + ["", "Mean difference ± 95% CI (pairs won / lost)."])


def merge_table(summary: pd.DataFrame, diagnostics: pd.DataFrame) -> str:
    from weightspace.merge import testbed_verdict

    diff = next(c for c in summary.columns if c.startswith("minus_"))
    lines = ["| set size | method | sets | normalised accuracy | − task arithmetic (paired) | won / lost | λ (median) |",
             "|--:|:--|--:|--:|--:|--:|--:|"]
    for _, r in summary.iterrows():
        lam = {"mean": "1/N", "subspace_mean": "–"}.get(r["method"], f"{r['lam']:g}{' [edge]' if r['lam_at_edge'] else ''}")
        ci = "" if pd.isna(r["ci95"]) else f" ± {r['ci95']:.3f}"
        dci = "" if pd.isna(r["diff_ci95"]) else f" ± {r['diff_ci95']:.3f}"
        lines.append(f"| {int(r['set_size'])} | {r['method']} | {int(r['sets'])} | {r['normalised_mean']:.3f}{ci} "
                     f"| {r[diff]:+.3f}{dci} | {int(r['wins'])} / {int(r['losses'])} | {lam} |")
    ok, verdict = testbed_verdict(diagnostics)
    lines += ["", f"Normalised accuracy: merged / the task's own model, mean over a set's tasks, mean ± 95% CI "
              f"over sets; task vectors against the {summary['reference'].iloc[0]}; on the set of all "
              f"candidates, largest |W_subspace mean − W_mean| = {summary['subspace_mean_vs_mean'].iloc[0]:.2g}. "
              f"Testbed: {verdict}."]
    return "\n".join(lines)


ACROSS_METRICS = ("mutual_knn", "cka", "cknna", "svcca")


def across_table(summaries: list[pd.DataFrame]) -> str:
    """One row per collection pair and headline metric: mean alignment across, within each
    collection, under the shuffled-probe null (every metric: results/across/*/summary.csv)."""
    lines = ["| a ~ b | metric | across | within a | within b | null | pairs across |", "|:--|:--|--:|--:|--:|--:|--:|"]
    fmt = lambda v: "–" if pd.isna(v) else f"{v:.3f}"  # noqa: E731
    for s in summaries:
        for r in s[s.metric.isin(ACROSS_METRICS)].itertuples():
            lines.append(f"| {r.a} ~ {r.b} | {r.metric} | **{fmt(r.across)}** | {fmt(getattr(r, 'within_a', None))} | "
                         f"{fmt(getattr(r, 'within_b', None))} | {fmt(r.null)} | {int(r.across_pairs)} |")
    return "\n".join(lines)


def replace(text: str, name: str, new: str) -> str:
    pattern = re.compile(rf"(<!-- {re.escape(name)}:start -->\n).*?(<!-- {re.escape(name)}:end -->)", re.S)
    return pattern.sub(lambda m: m[1] + new + "\n" + m[2], text)


def _rows(block: str) -> list[str]:
    """A markdown table's data rows (after its header and separator), up to its first blank line."""
    lines = block.split("\n\n")[0].splitlines()
    return [line for line in lines[2:] if line.startswith("| ")]


def _key(row: str) -> str:
    return row.split("|")[1].strip()


def keep_absent(text: str, name: str, new: str) -> tuple[str, list[str]]:
    """``new`` (a table built from the runs present) with the rows of the current table whose
    key (first cell: a collection, a pair) no run here made, kept where they stood: a table that
    gathers several configs' runs is not emptied by running one of them. Returns the table and
    the kept keys (``make docs`` names them)."""
    m = re.search(rf"<!-- {re.escape(name)}:start -->\n(.*?)<!-- {re.escape(name)}:end -->", text, re.S)
    if not m:
        return new, []
    fresh = _rows(new)
    by_key: dict[str, list[str]] = {}
    for row in fresh:
        by_key.setdefault(_key(row), []).append(row)
    merged, kept, done = [], [], set()
    for row in _rows(m[1]):
        k = _key(row)
        if k not in by_key:
            merged.append(row)
            kept += [] if k in kept else [k]
        elif k not in done:
            merged += by_key[k]
            done.add(k)
    merged += [row for row in fresh if _key(row) not in done]
    head, _, tail = new.partition("\n\n")
    table = "\n".join(head.splitlines()[:2] + merged)
    return table + ("\n\n" + tail if tail else ""), kept


DOCS = ("README.md", "docs/results.md", "docs/guide.md")
FIGURES = {  # docs/figures/<name>: <path> under results/ (the latest run's: ``latest``)
    "overview_sharing.png": "figures/overview_sharing.png",
    "serving.png": "figures/serving.png",
    "accuracy_vs_k_mlp_shared.png": "digits-mlp-shared/figures/full/accuracy_vs_k.png",
    "basis_size_mlp_shared.png": "digits-mlp-shared/figures/full/error_vs_basis_size.png",
    "basis_size_mlp_independent.png": "digits-mlp-independent/figures/full/error_vs_basis_size.png",
    "adapt_digits_lora.png": "full-lora/figures/delta/adapt_accuracy_vs_trainable.png",
    "merge_digits_finetune.png": "full-finetune/figures/full/merge_normalised_accuracy.png",
    "merge_digits_lora.png": "full-lora/figures/delta/merge_normalised_accuracy.png",
    "across_mlp_architectures.png": "across/digits-mlp~digits-mlp-deep/alignment_heatmap.png",
    "transfer_matrix.png": "figures/transfer_matrix.png",
    "transfer_digits_to_mnist.png": "transfer/digits-mlp-shared~mnist-mlp-shared/transfer.png",
    "transfer_independent_to_shared.png": "transfer/digits-mlp-independent~digits-mlp-shared/transfer.png",
    "transfer_architectures.png": "transfer/digits-mlp~digits-mlp-deep/transfer.png",
    "transfer_digits_to_fashion.png": "transfer/digits-24~fashion-24/transfer.png",  # three-datasets.yaml
    **{f"minilm_{f}.png": f"minilm-lora/figures/delta/{f}.png" for f in (
        "accuracy_vs_k", "alignment_vs_weights", "alignment_heatmap", "adapt_accuracy_vs_trainable",
        "merge_normalised_accuracy")},
}


def update_tables(text: str, summary: Path, methods: Path) -> str:
    """Every marked table of ``text`` whose results exist, rewritten."""
    if "<!-- verdict:start -->" in text and summary.exists():
        text = replace(text, "verdict", verdict_table(pd.read_csv(summary)))
    if "<!-- summary:start -->" in text and methods.exists():
        text = replace(text, "summary", table(pd.read_csv(methods)))
    gathered = {}  # tables of every run's results: rows no run here made are kept (keep_absent)
    exports = export_table() if "<!-- exports:start -->" in text else None
    if exports:
        gathered["exports"] = exports
    transfers = found("transfer/*~*/summary.csv")  # every pair of every run
    if "<!-- transfer:start -->" in text and transfers:
        gathered["transfer"] = transfer_table(pd.concat([pd.read_csv(p) for p in transfers], ignore_index=True))
    across = found("across/*/summary.csv")
    if "<!-- across:start -->" in text and across:
        gathered["across"] = across_table([pd.read_csv(p) for p in across])
    for name, new in gathered.items():
        new, kept = keep_absent(text, name, new)
        if kept:
            print(f"make docs: {name}: rows kept from the docs, no run here made them: {', '.join(kept)}")
        text = replace(text, name, new)
    for stage, c in re.findall(r"<!-- (adapt|merge):([A-Za-z0-9_.-]+):start -->", text):
        tables = found(f"{c}/{stage}/*/summary.csv")
        if not tables:
            continue
        s = pd.read_csv(tables[0])
        if stage == "adapt":
            paired = tables[0].parent / "paired.csv"
            new = adapt_table(s) + ("\n\n" + paired_table(pd.read_csv(paired)) if paired.exists() else "")
        else:
            new = merge_table(s, pd.read_csv(tables[0].parent / "diagnostics.csv"))
        text = replace(text, f"{stage}:{c}", new)
    return text


def config_reference(schema: dict) -> str:
    """config/README.md: one table per section of the schema, every key with its type, default
    and description."""

    def kind(node):
        if "$ref" in node:
            return "see " + node["$ref"].split("/")[-1]
        if "enum" in node:
            return " \\| ".join(str(e) for e in node["enum"])
        if "oneOf" in node:
            return " or ".join(kind(o) for o in node["oneOf"])
        t = node.get("type", "")
        t = " or ".join(t) if isinstance(t, list) else t
        if t == "array" and isinstance(node.get("items"), dict) and "enum" not in node["items"]:
            t = f"list of {kind(node['items'])}"
        return t or "any"

    def rows(props, prefix=""):
        out = []
        for key, node in props.items():
            default = f"`{json.dumps(node['default'])}`" if "default" in node else ""
            desc = node.get("description", "").replace("|", "\\|").replace("\n", " ").strip()
            out.append(f"| `{prefix}{key}` | {kind(node)} | {default} | {desc} |")
            sub = node.get("properties") or (node.get("items") or {}).get("properties")
            if node.get("type") == "object" and sub and "$ref" not in node:
                out += rows(sub, f"{prefix}{key}.")
            for alt in node.get("oneOf", []):
                if isinstance(alt, dict) and alt.get("properties"):
                    out += rows(alt["properties"], f"{prefix}{key}.")
            if isinstance(node.get("items"), dict):
                for alt in node["items"].get("oneOf", []):
                    if isinstance(alt, dict) and alt.get("properties"):
                        out += rows(alt["properties"], f"{prefix}{key}[].")
        return out

    head = ["| key | type | default | description |", "|:--|:--|:--|:--|"]
    parts = ["# Configuration", "",
             "Generated from `config/schema.yaml` by `make docs` (a test checks it is current). The config "
             "is validated against that schema when the workflow starts; defaults are filled in, and a wrong "
             "key or value stops the run naming it. `config/config.yaml` is the default (the offline zoo); "
             "`config/collections/*.yaml` are ready configs for real collections; `.test/config/config.yaml` "
             "is the small config CI runs. Run any of them with `make run CONFIG=<file>` (in its own folder, "
             "runs/<file name>/; the demo in results/).", ""]
    top = {k: v for k, v in schema["properties"].items() if k != "collections"}
    coll = schema["properties"]["collections"]
    parts += ["## Top level", ""] + head + rows(top) + [""]
    parts += ["## collections.<name>", "", coll.get("description", ""), ""] + head
    parts += rows(coll["additionalProperties"]["properties"]) + [""]
    for name, node in schema["$defs"].items():
        parts += [f"## {name}", "", node.get("description", ""), ""] + head + rows(node["properties"]) + [""]
    return "\n".join(parts).replace("\n\n\n", "\n\n")


def main(summary="results/summary.csv", methods="results/methods.csv", tables_only=False):
    import shutil

    import yaml

    for doc in DOCS:
        path = ROOT / doc
        path.write_text(update_tables(path.read_text(), ROOT / summary, ROOT / methods))
    if tables_only:
        return
    (ROOT / "docs" / "figures").mkdir(exist_ok=True)
    for name, rel in FIGURES.items():
        source = figure_source(rel)
        if source is not None:
            shutil.copyfile(source, ROOT / "docs" / "figures" / name)
    schema = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())
    (ROOT / "config" / "README.md").write_text(config_reference(schema))


if __name__ == "__main__":
    main()
