"""Figures (seaborn): spectra against nulls, accuracy against k, compression against accuracy.

Every figure shows the baselines beside the result: the Gaussian and rotation nulls beside
the spectra, the mean / random / per-model SVD baselines and the original models beside the
projected ones, basis and held-out models side by side.
"""

from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.cm  # noqa: E402
import matplotlib.colors  # noqa: E402
import matplotlib.lines  # noqa: E402
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .core.stats import ci95  # noqa: E402
from .io import atomic_path  # noqa: E402
from .layers import depth_key  # noqa: E402

METHOD_ORDER = ["projected", "svd", "random", "mean"]
PALETTE = {"projected": "#1f77b4", "svd": "#2ca02c", "random": "#d62728", "mean": "#7f7f7f"}
SOURCE_STYLE = {"data": "-", "Gaussian null": "--", "rotation null": ":"}


def t_interval(values) -> tuple[float, float]:
    """seaborn's error band: the mean ± the 95% t-interval half-width (``core.stats.ci95``), the
    interval the tables report; computed, not resampled (a bootstrap band is most of a figure
    job's time)."""
    m = float(np.mean(values))
    h = ci95(values)
    return m - h, m + h


def _save(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png", metadata={"Software": None})
    plt.close(fig)


NAMED_MATRICES = 12  # up to this many matrices each gets its name in a legend; beyond, its kind does


def matrix_kind(target: str) -> str:
    """A matrix's kind: its name with the layer numbers taken out (``encoder.layer.3.attention.
    self.query.weight`` → ``encoder.layer.#.attention.self.query.weight``), what matrices of one
    role in every block share."""
    import re

    return re.sub(r"(?<=[._])\d+(?=[._]|$)", "#", target)


def matrix_colors(targets: list[str]) -> dict[str, tuple]:
    """One colour per matrix: by depth (a sequential palette, neighbouring layers alike, first
    and last told apart) for up to NAMED_MATRICES; beyond, one categorical colour per kind
    (``matrix_kind``: query, key, value, MLP, … of every block together)."""
    if len(targets) <= NAMED_MATRICES:
        cmap = matplotlib.colormaps["viridis"]
        n = len(targets)
        return {t: cmap(0.9 * i / max(1, n - 1)) for i, t in enumerate(targets)}
    kinds = list(dict.fromkeys(matrix_kind(t) for t in targets))
    palette = sns.color_palette("tab10" if len(kinds) <= 10 else "tab20" if len(kinds) <= 20 else "husl", len(kinds))
    return {t: palette[kinds.index(matrix_kind(t))] for t in targets}


def matrix_handles(colors: dict, shapes: dict | None = None) -> list:
    """Legend entries for ``matrix_colors``: each matrix by name (and shape) when few, else each
    kind with its number of matrices."""
    if len(colors) <= NAMED_MATRICES:
        return [matplotlib.lines.Line2D([], [], color=c, lw=2, label=f"{t} ({shapes[t]})" if shapes else t)
                for t, c in colors.items()]
    kinds: dict[str, list] = {}
    for t, c in colors.items():
        kinds.setdefault(matrix_kind(t), [c, 0])[1] += 1
    return [matplotlib.lines.Line2D([], [], color=c, lw=2, label=f"{k} (×{n})") for k, (c, n) in kinds.items()]


def _matrix_legend(fig, colors: dict, shapes: dict, ncol_max: int = 4) -> None:
    """Matrices under the panels, off the data: their names when few, else their kinds."""
    handles = matrix_handles(colors, shapes)
    fig.legend(handles=handles, loc="upper center", ncol=min(ncol_max if len(colors) <= NAMED_MATRICES else 2,
                                                             len(handles)),
               fontsize=7, frameon=False, bbox_to_anchor=(0.5, 0.065))


def spectra_figure(spectra: pd.DataFrame, title: str, path: str, max_k: int = 64) -> None:
    """2×2 panels: rows = (centred stack vs Gaussian null, uncentred stack vs rotation null),
    columns = (row mode, column mode). One colour per matrix (by depth): the data solid, its
    own null dashed. Never averaged across matrices (their shapes differ)."""
    sns.set_theme(style="whitegrid", context="paper")
    targets = sorted(spectra["target"].unique(), key=depth_key)
    colors = matrix_colors(targets)
    many = len(targets) > NAMED_MATRICES
    width, alpha = (0.6, 0.5) if many else (1.0, 1.0)  # hundreds of curves: bands per kind
    shapes = spectra.drop_duplicates("target").set_index("target")["shape"].to_dict()
    legend_rows = -(-len(matrix_handles(colors, shapes)) // (2 if many else 4))
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.8 + 0.18 * legend_rows), sharey=True)
    panels = [(True, "Gaussian null"), (False, "rotation null")]
    for r, (centered, null) in enumerate(panels):
        for c, mode in enumerate(["row", "col"]):
            ax = axes[r, c]
            d = spectra[(spectra["mode"] == mode) & (spectra["centered"] == centered) & (spectra["k"] <= max_k)]
            for t in targets:
                for source, ls in (("data", "-"), (null, "--")):
                    dt = d[(d["target"] == t) & (d["source"] == source)]
                    if len(dt):
                        ax.plot(dt["k"], dt["explained"], color=colors[t], ls=ls, lw=(1.4 if ls == "-" else 1.0) * width,
                                alpha=alpha)
            ax.set_xscale("log", base=2)
            ax.set_ylim(0, 1.02)
            ax.set_xlabel("k (leading directions of the mode)")
            ax.set_ylabel(("centred" if centered else "uncentred") + " cumulative explained variance")
            ax.set_title(f"{mode} mode: data (solid) vs {null} (dashed)", fontsize=9)
    fig.suptitle(f"{title}: spectra per matrix, each against its own null"
                 + (f" ({len(targets)} matrices, coloured by kind)" if many else ""), y=1.0)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    _matrix_legend(fig, colors, shapes)
    _save(fig, path)


def overview_figure(spectra: pd.DataFrame, sharing: pd.DataFrame, path: str, max_k: int = 64) -> None:
    """All collections, one panel per collection and view: per matrix and mode, the uncentred
    explained variance above the mean of its rotation-null draws (row mode solid, column mode
    dashed), one colour per matrix by depth; the panel title carries the view's sharing count
    (matrices called shared at the FDR / matrices tested)."""
    sns.set_theme(style="whitegrid", context="paper")
    d = spectra[(~spectra["centered"]) & spectra["mode"].isin(["row", "col"]) & (spectra["k"] <= max_k)]
    wide = d.pivot_table(index=["collection", "view", "target", "mode", "k"], columns="source",
                         values="explained").reset_index()
    if "rotation null" not in wide:
        wide["rotation null"] = np.nan
    wide["excess"] = wide["data"] - wide["rotation null"]
    panels = list(dict.fromkeys(zip(spectra["collection"], spectra["view"])))
    colors = matrix_colors(sorted(wide["target"].unique(), key=depth_key))  # one style per matrix name, all panels
    many = len(colors) > NAMED_MATRICES
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.9), sharey=True, squeeze=False)
    for ax, (c, v) in zip(axes[0], panels):
        dv = wide[(wide["collection"] == c) & (wide["view"] == v)]
        for t in sorted(dv["target"].unique(), key=depth_key):
            for mode, ls in (("row", "-"), ("col", "--")):
                dt = dv[(dv["target"] == t) & (dv["mode"] == mode)].dropna(subset=["excess"])
                if len(dt):
                    ax.plot(dt["k"], dt["excess"], color=colors[t], ls=ls, lw=0.8 if many else 1.3,
                            alpha=0.6 if many else 1.0)
        ax.axhline(0, color="black", lw=0.8)
        sh = sharing[(sharing["collection"] == c) & (sharing["view"] == v) & sharing["p"].notna()]
        ax.set_title(f"{c} [{v}]\nshared: {int(sh['shared'].astype(bool).sum())} of {len(sh)} matrices",
                     fontsize=8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("k (leading directions)")
        ax.set_ylabel("explained variance above rotation null" if ax is axes[0, 0] else "")
    handles = [matplotlib.lines.Line2D([], [], color="0.3", ls="-", label="row mode"),
               matplotlib.lines.Line2D([], [], color="0.3", ls="--", label="column mode"), *matrix_handles(colors)]
    fig.suptitle("Sharing: uncentred explained variance of the stack minus the mean of its rotation null, "
                 "per matrix (0 = nothing shared)", y=1.0)
    fig.tight_layout()
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), ncol=1 if len(handles) <= 16 else 2,
               fontsize=7, frameon=False)  # beside the panels, whatever their number
    _save(fig, path)


def has_accuracy(metrics: pd.DataFrame) -> bool:
    """Whether the collection has a task evaluator (else only errors and bytes are reported)."""
    return "accuracy" in metrics and metrics["accuracy"].notna().any()


def metric_name(metrics: pd.DataFrame) -> str:
    """What the ``accuracy`` column measures (the evaluator's ``metric``: ROUGE-L for causal-lm)."""
    return str(metrics["metric"].dropna().iloc[0]) if "metric" in metrics and metrics["metric"].notna().any() \
        else "accuracy"


def svd_is_mean(metrics: pd.DataFrame) -> bool:
    """Whether the per-model SVD baseline equals the mean at every model, k and split: its bytes
    hold no rank-1 term of any matrix (a rank r costs r·(m + n) numbers against the k² of a
    core), so evaluate stores rank 0 and its line lies under the mean's."""
    key = ["model", "k", "split"]
    svd, mean = (metrics[metrics["method"] == m].set_index(key)["rel_error_centered"] for m in ("svd", "mean"))
    if svd.empty or mean.empty or set(svd.index) != set(mean.index):
        return False
    return bool(np.allclose(svd.sort_index().to_numpy(), mean.sort_index().to_numpy(), rtol=0, atol=1e-9))


def _name_hidden_svd(legend, metrics: pd.DataFrame) -> None:
    """Say in the legend when the svd line is hidden under the mean's (``svd_is_mean``)."""
    if legend is not None and svd_is_mean(metrics):
        for text in legend.get_texts():
            if text.get_text() == "svd":
                text.set_text("svd (= mean: no rank fits its bytes)")


def accuracy_figure(metrics: pd.DataFrame, title: str, path: str) -> None:
    """Columns = split (basis, held-out); rows = task accuracy and centred relative error,
    against k for every method; the original models (and the bare base) as horizontal lines.
    Without a task evaluator only the error row is drawn, and the title says so."""
    sns.set_theme(style="whitegrid", context="paper")
    splits = [s for s in ["basis", "heldout"] if s in set(metrics["split"])]
    rows = [("accuracy", f"task {metric_name(metrics)}")] if has_accuracy(metrics) else []
    rows.append(("rel_error_centered", "‖Ŵ − W‖ / ‖W − μ‖"))
    fig, axes = plt.subplots(len(rows), len(splits), figsize=(5.5 * len(splits), 3.8 * len(rows) + 0.3),
                             squeeze=False, sharex=True)
    swept = metrics[metrics["method"].isin(METHOD_ORDER)]
    for c, split in enumerate(splits):
        d = swept[swept["split"] == split]
        for r, (col, label) in enumerate(rows):
            ax = axes[r, c]
            sns.lineplot(data=d, x="k", y=col, hue="method", hue_order=METHOD_ORDER, palette=PALETTE,
                         marker="o", errorbar=t_interval, ax=ax)
            if col == "accuracy":
                for method, ls in [("original", "--"), ("base_only", ":")]:
                    ref = metrics[(metrics["split"] == split) & (metrics["method"] == method)]
                    if len(ref):
                        ax.axhline(ref["accuracy"].mean(), color="black", ls=ls,
                                   label=f"{method} (mean {ref['accuracy'].mean():.3f})")
                ax.set_ylim(0, 1.02)
            ax.set_xscale("log", base=2)
            ax.ticklabel_format(axis="y", useOffset=False)
            ax.set_xlabel("k (subspace size per mode)")
            ax.set_ylabel(label)
            ax.set_title(f"{split} models (n={d['model'].nunique()})")
            _name_hidden_svd(ax.legend(fontsize=7, loc="lower right" if col == "accuracy" else "lower left"), metrics)
    fig.suptitle(title if has_accuracy(metrics) else f"{title}: no task evaluator, reconstruction error only", y=1.0)
    fig.tight_layout()
    _save(fig, path)


def saturated_ks(compression: pd.DataFrame) -> list[int]:
    """The k at which every target's k×k core holds its whole matrix: nothing is compressed, so
    a point there claims nothing (tables written before this column: none)."""
    if "saturated" not in compression:
        return []
    c = compression[compression["method"] == "projected"]
    return sorted(int(k) for k in c.loc[c["saturated"] >= c["targets"], "k"])


def compression_figure(metrics: pd.DataFrame, compression: pd.DataFrame, title: str, path: str) -> None:
    """Mean task accuracy (or, without a task evaluator, mean centred relative error) against
    stored bytes relative to the originals, per method and split; k at which every matrix's core
    holds the whole matrix (``saturated_ks``) are left out: they compress nothing."""
    sns.set_theme(style="whitegrid", context="paper")
    whole = saturated_ks(compression)
    metrics = metrics[~metrics["k"].isin(whole)]
    y, ylabel = (("accuracy", f"mean task {metric_name(metrics)}") if has_accuracy(metrics)
                 else ("rel_error_centered", "mean ‖Ŵ − W‖ / ‖W − μ‖ (no task evaluator)"))
    acc = (metrics[metrics["method"].isin(METHOD_ORDER)]
           .groupby(["method", "k", "split"], as_index=False)[y].mean())
    d = acc.merge(compression[["method", "k", "compression"]], on=["method", "k"])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    splits = [sp for sp in ("basis", "heldout") if sp in set(d["split"])]
    dashes = {"basis": "", "heldout": (4, 2)}
    sns.lineplot(data=d, x="compression", y=y, hue="method", hue_order=METHOD_ORDER, palette=PALETTE,
                 style="split", style_order=splits, dashes=dashes, markers=True, sort=True, ax=ax)
    if y == "accuracy":
        orig = metrics[metrics["method"] == "original"].groupby("split")["accuracy"].mean()
        for sp in splits:  # each split's originals: what its compressed models are read against
            if sp in orig:
                ax.plot(1.0, orig[sp], marker="*", ms=11, color="black", ls="none",
                        label=f"original, {sp} ({orig[sp]:.3f})", alpha=1 if sp == "basis" else 0.55)
                ax.axhline(orig[sp], color="black", lw=0.8, ls="-" if sp == "basis" else "--",
                           alpha=0.6 if sp == "basis" else 0.35)
        ax.set_ylim(0, 1.02)
    ax.set_xscale("log")
    lo, hi = min(1.0, float(d["compression"].min())), max(1.0, float(d["compression"].max()))
    ax.set_xlim(lo / 1.3, hi * 1.3)  # bytes 1.0 (the originals) always in view, on either side of the points
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.set_xlabel("stored bytes / bytes of the original models (log scale; 1 = the originals)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    _name_hidden_svd(ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False), metrics)
    fig.tight_layout()
    _save(fig, path)


def summary_table(metrics: pd.DataFrame, compression: pd.DataFrame, k: int) -> pd.DataFrame:
    """Mean accuracy and centred error per split and method at k (and the originals)."""
    d = metrics[(metrics["k"] == k) | metrics["method"].isin(["original", "base_only"])]
    out = (d.groupby(["split", "method"], as_index=False)
           .agg(accuracy=("accuracy", "mean"), rel_error_centered=("rel_error_centered", "mean"),
                models=("model", "nunique")))
    comp = compression[(compression["k"] == k) | (compression["method"] == "original")]
    out = out.merge(comp[["method", "compression"]], on="method", how="left")
    out.insert(2, "k", [k if m in METHOD_ORDER else None for m in out["method"]])
    return out


# ----------------------------------------------------------------------------- alignment
MAX_TICKS = 24  # model labels per heatmap axis (beyond, every n-th)


def tick_labels(order: list[str], tasks: dict) -> list[str]:
    """A heatmap axis's labels, "model (task)": every model's up to MAX_TICKS, else every n-th
    (the others blank), so that labels stay legible from 10 to 500 models."""
    step = max(1, -(-len(order) // MAX_TICKS))
    return [(f"{m} ({tasks[m]})" if tasks.get(m) else m) if i % step == 0 else "" for i, m in enumerate(order)]


def task_blocks(ax, order: list[str], tasks: dict, cols: list[str] | None = None, col_tasks: dict | None = None) -> None:
    """White lines between the task groups of a heatmap whose models are ordered by task (only
    where tasks are shared: with a task per model, lines between every cell would hide the data)."""
    for names, tk, line in ((order, tasks, ax.axhline), (cols or order, col_tasks or tasks, ax.axvline)):
        groups = [str(tk.get(m, "")) for m in names]
        if len(set(groups)) > len(groups) / 2:
            continue
        for i in range(1, len(groups)):
            if groups[i] != groups[i - 1]:
                line(i, color="white", lw=1.2)


def alignment_heatmap(table: pd.DataFrame, keys: list[str], tasks: dict, metric: str, k: int,
                      title: str, path: str) -> None:
    """Model × model alignment (one metric), originals beside their projections at k, models
    ordered by task."""
    from .representations import matrix

    order = sorted(keys, key=lambda m: (str(tasks.get(m, "")), m))
    sns.set_theme(style="white", context="paper")
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2))
    for ax, variant in zip(axes, ["original", "projected"]):
        M = matrix(table, metric, variant, keys).loc[order, order]
        off = M.values[~np.eye(len(order), dtype=bool)]
        labels = tick_labels(order, tasks)
        sns.heatmap(M, ax=ax, cmap="viridis", vmin=0, vmax=1, square=True,
                    cbar_kws={"label": metric.replace("_", " ")}, xticklabels=labels, yticklabels=labels)
        ax.tick_params(labelsize=7 if len(order) <= MAX_TICKS else 6, length=0)
        task_blocks(ax, order, tasks)
        name = "original models" if variant == "original" else f"projected at k={k}"
        null = table[(table.variant == "null") & (table.metric == metric)].score.mean()
        ax.set_title(f"{name}: mean off-diagonal {off.mean():.3f} (shuffled-probe null {null:.3f})", fontsize=9)
    fig.suptitle(f"{title}: representation alignment ({metric.replace('_', ' ')})")
    fig.tight_layout()
    _save(fig, path)


def alignment_across(table: pd.DataFrame, summary: pd.DataFrame, tasks: list[dict], metric: str, a: str, b: str,
                     path: str, layers="best") -> None:
    """Left: every model of collection a (rows) against every model of b (columns), one
    metric, models ordered by task. Right: per metric, the mean alignment across the two
    collections beside the means within each and the shuffled-probe null."""
    d = table[(table.variant == "across") & (table.metric == metric)]
    rows = sorted(dict.fromkeys(d.model_a), key=lambda m: (str(tasks[0].get(m, "")), m))
    cols = sorted(dict.fromkeys(d.model_b), key=lambda m: (str(tasks[1].get(m, "")), m))
    M = d.pivot(index="model_a", columns="model_b", values="score").loc[rows, cols]
    sns.set_theme(style="white", context="paper")
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 5.4), gridspec_kw={"width_ratios": [1.15, 1]})
    sns.heatmap(M, ax=ax, cmap="viridis", vmin=0, vmax=1, cbar_kws={"label": metric.replace("_", " ")},
                xticklabels=tick_labels(cols, tasks[1]), yticklabels=tick_labels(rows, tasks[0]))
    ax.tick_params(labelsize=7 if max(len(rows), len(cols)) <= MAX_TICKS else 6, length=0)
    task_blocks(ax, rows, tasks[0], cols, tasks[1])
    ax.set_xlabel(f"{b} models")
    ax.set_ylabel(f"{a} models")
    ax.set_title(f"{metric.replace('_', ' ')} across: mean {M.values.mean():.3f}")
    long = summary.melt(id_vars=["metric"], value_vars=[v for v in ("across", "within_a", "within_b", "null")
                                                        if v in summary], var_name="pairs", value_name="alignment")
    names = {"across": f"across ({a} ~ {b})", "within_a": f"within {a}", "within_b": f"within {b}",
             "null": "shuffled-probe null"}
    long["pairs"] = long["pairs"].map(names)
    sns.set_style("whitegrid")
    sns.barplot(data=long, x="metric", y="alignment", hue="pairs", ax=bx,
                hue_order=[names[v] for v in ("within_a", "across", "within_b", "null") if names[v] in set(long.pairs)],
                palette={names["within_a"]: "#4c72b0", names["across"]: "#dd8452", names["within_b"]: "#55a868",
                         names["null"]: "#8c8c8c"})
    bx.set_ylim(0, 1.02)
    bx.set_xlabel("metric")
    bx.set_ylabel("mean alignment (" + ("best layer pair" if layers == "best" else f"layers: {layers}") + ")")
    bx.tick_params(axis="x", labelsize=7, rotation=30)
    bx.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)  # below the axes
    bx.set_title("mean alignment per metric")
    fig.suptitle(f"Representation alignment across collections: {a} ~ {b} (same probe items)")
    fig.tight_layout()
    _save(fig, path)


def alignment_vs_weights(table: pd.DataFrame, weights: pd.DataFrame, tasks: dict, title: str,
                         path: str) -> None:
    """Per metric: weight cosine (x) against alignment of the original models (y), one point
    per basis pair, coloured same task / different task; Spearman's ρ in the panel title."""
    d = table[table.variant == "original"].merge(weights, on=["model_a", "model_b"])
    d["pair"] = np.where(d.model_a.map(tasks) == d.model_b.map(tasks), "same task", "different task")
    metrics = list(dict.fromkeys(d.metric))
    sns.set_theme(style="whitegrid", context="paper")
    cols = min(4, len(metrics))
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.2 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        m = d[d.metric == metric]
        sns.scatterplot(data=m, x="weight_cosine", y="score", hue="pair", hue_order=["same task", "different task"],
                        s=12, alpha=0.7, ax=ax, legend=False)
        rho = m["weight_cosine"].corr(m["score"], method="spearman")
        null = table[(table.variant == "null") & (table.metric == metric)].score.mean()
        ax.axhline(null, color="black", ls=":", lw=1, label="shuffled-probe null")
        ax.set_title(f"{metric.replace('_', ' ')}: Spearman ρ = {rho:.2f} (n={len(m)})", fontsize=8)
        ax.set_xlabel("weight cosine (centred, basis pairs)")
        ax.set_ylabel("alignment")
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    handles = [matplotlib.lines.Line2D([], [], ls="", marker="o", color=c, label=l)
               for c, l in zip(sns.color_palette()[:2], ["same task", "different task"])]
    handles.append(matplotlib.lines.Line2D([], [], color="black", ls=":", label="shuffled-probe null (mean)"))
    fig.legend(handles=handles, loc="lower right", fontsize=8, frameon=True)
    fig.suptitle(f"{title}: weight-space similarity vs representation alignment", y=1.0)
    fig.tight_layout()
    _save(fig, path)


def alignment_projection(table: pd.DataFrame, k: int, title: str, path: str) -> None:
    """Top: one panel per metric, pair alignment of the projected models (y) against the
    original pair (x), with y = x. Bottom: alignment of each model with its own projection, per
    metric, beside the shuffled-probe null."""
    o = table[table.variant == "original"].rename(columns={"score": "original"})
    p = table[table.variant == "projected"].rename(columns={"score": "projected"})
    d = o.merge(p[["model_a", "model_b", "metric", "projected"]], on=["model_a", "model_b", "metric"])
    selfs = table[table.variant == "original~projected"]
    metrics = list(dict.fromkeys(table["metric"]))
    sns.set_theme(style="whitegrid", context="paper")
    fig = plt.figure(figsize=(2.3 * len(metrics), 5.6))
    grid = fig.add_gridspec(2, len(metrics), height_ratios=[1, 1.05])
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(grid[0, i])
        dm = d[d["metric"] == metric]
        ax.scatter(dm["original"], dm["projected"], s=5, alpha=0.5, color="#1f77b4", lw=0)
        ax.plot([0, 1], [0, 1], color="black", ls="--", lw=0.8)
        ax.set_xlim(-0.05, 1.02)
        ax.set_ylim(-0.05, 1.02)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("original pair", fontsize=8)
        ax.set_ylabel(f"projected pair (k={k})" if i == 0 else "", fontsize=8)
        ax.tick_params(labelsize=7)
    a2 = fig.add_subplot(grid[1, :])
    sns.boxplot(data=selfs, x="metric", y="score", order=metrics, ax=a2, color="#1f77b4")
    a2.set_ylim(-0.05, 1.02)
    a2.set_xlabel("")
    a2.set_ylabel(f"model vs its projection (k={k})")
    nulls = table[table.variant == "null"].groupby("metric").score.mean()
    a2.scatter(range(len(metrics)), [nulls.get(m, np.nan) for m in metrics], marker="_",
               s=400, color="black", label="shuffled-probe null (mean)", zorder=3)
    a2.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    a2.set_title(f"each model against itself projected (n={selfs.model_a.nunique()}); "
                 "top: every model pair, dashed y = x", fontsize=9)
    fig.suptitle(f"{title}: alignment after projection onto the shared subspace")
    fig.tight_layout()
    _save(fig, path)


# ----------------------------------------------------------------------------- adapt and merge
ADAPT_STYLE = {  # method → (colour, marker)
    "coef-base": ("#1f77b4", "o"), "coef-mean": ("#17becf", "o"), "random": ("#d62728", "X"),
    "tinylora": ("#9467bd", "s"), "fourierft": ("#8c564b", "D"), "vera": ("#e377c2", "P"),
    "lora": ("#2ca02c", "^"), "head": ("#ff7f0e", "v"), "full": ("#000000", "*"),
}


def adapt_figure(summary: pd.DataFrame, title: str, path: str) -> None:
    """Test accuracy against trainable numbers (log x), one panel per training-set size; one
    marker per method (lines join its k), 95% confidence intervals over task × seed pairs as error
    bars; untrained starts as horizontal lines."""
    sns.set_theme(style="whitegrid", context="paper")
    sizes = sorted(summary["n_train"].unique())
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.6 * len(sizes) + 1.8, 4.2), sharey=True, squeeze=False)
    for ax, size in zip(axes[0], sizes):
        d = summary[summary["n_train"] == size]
        for method, (colour, marker) in ADAPT_STYLE.items():
            m = d[d["method"] == method].sort_values("trainable")
            if len(m):
                ax.errorbar(m["trainable"], m["accuracy"], yerr=m["ci95"].fillna(0), color=colour,
                            marker=marker, ms=6, capsize=3, lw=1.2, label=method)
        for method, ls in [("none-base", ":"), ("none-mean", "--")]:
            m = d[d["method"] == method]
            if len(m):
                ax.axhline(float(m["accuracy"].mean()), color="grey", ls=ls, lw=1.2,
                           label=f"{method} (no training)")
        ax.set_xscale("log")
        ax.set_xlabel("trainable numbers (log scale)")
        ax.set_title(f"{size} training examples per task")
    axes[0, 0].set_ylabel("test accuracy (mean over new tasks)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.suptitle(f"{title}: adapting to new tasks", y=1.02)
    fig.tight_layout()
    _save(fig, path)


def merge_figure(summary: pd.DataFrame, diagnostics: pd.DataFrame, title: str, path: str) -> None:
    """Per merge-set size (one column each): normalised test accuracy (merged / own model, mean
    over a set's tasks) per method, mean ± 95% CI over the sets (top), and the paired difference
    to task arithmetic on the same sets, mean ± CI (bottom); individual models (1.0) and the
    reference alone as lines."""
    sns.set_theme(style="whitegrid", context="paper")
    sizes = sorted(summary["set_size"].unique())
    order = list(summary.groupby("method")["normalised_mean"].mean().sort_values(ascending=False).index)
    fig, axes = plt.subplots(2, len(sizes), figsize=(4.2 * len(sizes) + 1.0, 7.2), squeeze=False, sharey="row")
    diff = next(c for c in summary.columns if c.startswith("minus_"))
    ref = float(diagnostics["reference_alone"].mean())
    for col, size in enumerate(sizes):
        d = summary[summary["set_size"] == size].set_index("method").reindex(order)
        y = np.arange(len(order))
        ax = axes[0, col]
        ax.barh(y, d["normalised_mean"], xerr=d["ci95"].fillna(0), color="#aec7e8", capsize=2)
        ax.axvline(1.0, color="black", ls="--", lw=1, label="individual models (1.0)")
        ax.axvline(ref, color="black", ls=":", lw=1, label=f"{d['reference'].iloc[0]} alone ({ref:.2f})")
        ax.set_yticks(y, order)
        ax.invert_yaxis()
        ax.set_xlabel("normalised accuracy (merged / own)")
        n = int(d["sets"].max())
        ax.set_title(f"sets of {size} models ({n} set{'s' if n > 1 else ''})")
        ax = axes[1, col]
        ax.barh(y, d[diff], xerr=d["diff_ci95"].fillna(0), color="#ffbb78", capsize=2)
        ax.axvline(0, color="black", lw=1)
        lo, hi = ax.get_xlim()  # zero inside the axes, with room, when every bar is on one side
        pad = 0.05 * (hi - lo)
        ax.set_xlim(min(lo, -pad), max(hi, pad))
        ax.set_yticks(y, order)
        ax.invert_yaxis()
        ax.set_xlabel(f"accuracy − {diff.removeprefix('minus_')}'s (paired on sets)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle("\n".join(textwrap.fill(line, 110) for line in title.split("\n")), fontsize=9)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    _save(fig, path)


def verdict_row(sharing: pd.DataFrame, metrics: pd.DataFrame, k: int, fdr: float, margin: float,
                share: float) -> dict:
    """The headline of one view: the sharing test's verdict (``spectra.view_verdict``), the
    mean-only error ‖W − μ‖/‖W‖ of basis and held-out models (near 0 for fine-tunes of one
    checkpoint, ≈ √(1 − 1/N) or above for independent models), and held-out quality of the
    projected models at k beside the originals."""
    from .spectra import view_verdict

    row = {**view_verdict(sharing, fdr, share), "fdr": fdr, "margin": margin}
    mean = metrics[metrics["method"] == "mean"]
    for split in ("basis", "heldout"):
        d = mean[mean["split"] == split]
        row[f"mean_only_error_{split}"] = float(d["rel_error"].mean()) if len(d) else None
    held = metrics[metrics["split"] == "heldout"]
    proj = held[(held["method"] == "projected") & (held["k"] == k)]
    row["k"] = k
    row["heldout_error_projected"] = float(proj["rel_error"].mean()) if len(proj) else None
    if has_accuracy(metrics):
        orig = held[held["method"] == "original"]
        row["heldout_accuracy_projected"] = float(proj["accuracy"].mean()) if len(proj) else None
        row["heldout_accuracy_original"] = float(orig["accuracy"].mean()) if len(orig) else None
    row["models_basis"] = int(metrics.loc[metrics["split"] == "basis", "model"].nunique())
    row["models_heldout"] = int(metrics.loc[metrics["split"] == "heldout", "model"].nunique())
    return row


def verdict_html(summary: pd.DataFrame) -> str:
    """The verdict table (summary.csv) as a compact standalone HTML fragment: the report shows it
    on its first page (narrow enough to sit beside the rule graph)."""
    def pair(a, b, fmt="{:.2f}"):
        return "–" if pd.isna(a) else f"{fmt.format(a)} / {fmt.format(b)}"

    rows = []
    for _, r in summary.iterrows():
        few = r.get("models_heldout")
        few = f" (n={int(few)}!)" if pd.notna(few) and int(few) <= 2 else ""
        acc = pair(r.get("heldout_accuracy_projected"), r.get("heldout_accuracy_original"))
        uncallable = int(r.get("matrices_uncallable", 0) or 0)
        flip = r.get("flip_margin")
        rows.append({"collection [view]": f"{r['collection']} [{r['view']}]", "verdict": r["verdict"],
                     "shared": f"{int(r['matrices_shared'])} of {int(r['matrices_tested'])}"
                               + (f" (+{uncallable} n/c)" if uncallable else ""),
                     "flips at margin": "never" if pd.isna(flip) else f"{flip:.3f}",
                     "excess k=4 / 16": pair(r["median_excess_k4"], r["median_excess_k16"]),
                     "‖W−μ‖/‖W‖ basis / held-out": pair(r["mean_only_error_basis"], r["mean_only_error_heldout"]) + few,
                     "held-out acc. projected / original": acc + (few if acc != "–" else "")})
    body = pd.DataFrame(rows).to_html(index=False, border=0, classes="verdict", table_id="verdict", escape=True)
    fdr, margin, k = (summary[c].iloc[0] if c in summary and len(summary) else None for c in ("fdr", "margin", "k"))
    note = (f"Shared: Benjamini–Hochberg at FDR {fdr}, beyond the rotation null by more than {margin}; held-out "
            f"models projected at k = {k}. The columns are explained in the caption of 1. Verdict.")
    style = ("<style>table.verdict{border-collapse:collapse;font:11px sans-serif;max-width:470px}"
             "table.verdict th,table.verdict td{padding:2px 4px;border-bottom:1px solid #ddd;text-align:right}"
             "table.verdict td:nth-child(-n+2),table.verdict th:nth-child(-n+2){text-align:left}</style>")
    return (f"{style}\n<h3>Verdict per collection and view</h3>\n{body}\n"
            f"<p style='font:11px sans-serif;max-width:470px'>{note}</p>\n")


def methods_html(methods: pd.DataFrame) -> str:
    """methods.csv (every method at the report's k) as a standalone HTML page the report shows
    inline: one table per collection and view, accuracy, centred error and stored bytes."""
    parts = ["<html><head><meta charset='utf-8'><style>table{border-collapse:collapse;font:12px sans-serif}"
             "th,td{padding:2px 6px;border-bottom:1px solid #ddd;text-align:right}"
             "td:first-child,th:first-child{text-align:left}</style></head><body>"]
    for (c, v), d in methods.groupby(["collection", "view"], sort=False):
        t = d.drop(columns=["collection", "view"]).rename(columns={
            "rel_error_centered": "‖Ŵ − W‖/‖W − μ‖", "compression": "bytes / originals"})
        if "k" in t:
            t["k"] = ["" if pd.isna(v) else int(v) for v in t["k"]]
        parts.append(f"<h4>{c} [{v}]</h4>" + t.to_html(index=False, border=0, na_rep="", float_format="{:.3f}".format))
    return "\n".join(parts) + "</body></html>\n"


def transfer_html(summary: pd.DataFrame) -> str:
    """The transfer verdict per pair (results/transfer/summary.csv rows) as the HTML fragment the
    report's first page shows under the sharing verdict."""
    def acc(r, m):
        v = r.get(f"accuracy_{m}")
        return "–" if v is None or pd.isna(v) else f"{v:.2f}"

    rows = [{"A's subspace → B's models [view]": f"{r['a']} → {r['b']} [{r['view']}]", "verdict": r["verdict"],
             "modes transferring": f"{int(r['rows_transfer'])} of {int(r['rows_tested'])}",
             "above chance (median)": "–" if pd.isna(r["median_above_chance"]) else f"{r['median_above_chance']:.2f}",
             "B acc. own / A's / random": " / ".join(acc(r, m) for m in ("own", "transfer", "random"))}
            for _, r in summary.iterrows()]
    body = pd.DataFrame(rows).to_html(index=False, border=0, classes="verdict", table_id="transfer", escape=True)
    k = summary["k"].iloc[0] if len(summary) else None
    note = (f"Above chance: (A's − k/d) / (B's own − k/d), median over modes; accuracy: B's held-out models at "
            f"k = {k}. The caption of 6. Transfer explains the test.")
    return (f"<h3>Transfer: one collection's subspace on another's models</h3>\n{body}\n"
            f"<p style='font:11px sans-serif;max-width:470px'>{note}</p>\n")


def sweep_figure(table: pd.DataFrame, title: str, path: str) -> None:
    """Basis-size sweep: held-out error at k (and the mean-only error) against N; the median
    excess of the sharing statistic against N, each point labelled with matrices shared."""
    sns.set_theme(style="whitegrid", context="paper")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    k = int(table["k"].iloc[0])
    a1.plot(table["n_basis"], table["heldout_error"], "o-", color="#1f77b4", label=f"projected, k = {k}")
    a1.plot(table["n_basis"], table["heldout_mean_only_error"], "s--", color="#7f7f7f", label="mean only")
    a1.set_xlabel("basis models N")
    a1.set_ylabel("held-out ‖Ŵ − W‖ / ‖W‖")
    a1.set_ylim(0, max(1.05, float(table[["heldout_error", "heldout_mean_only_error"]].max().max()) * 1.05))
    a1.legend(fontsize=8, loc="lower left")
    a1.set_title(f"held-out models (n = {int(table['heldout_models'].iloc[0])})", fontsize=9)
    a2.plot(table["n_basis"], table["median_excess"], "o-", color="#ff7f0e")
    for _, r in table.iterrows():
        a2.annotate(f"{int(r['matrices_shared'])}/{int(r['matrices_tested'])}", (r["n_basis"], r["median_excess"]),
                    textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    a2.axhline(0, color="black", lw=0.8)
    a2.set_xlabel("basis models N")
    a2.set_ylabel("median excess over rotation null")
    a2.set_title("sharing statistic (labels: matrices shared)", fontsize=9)
    for ax in (a1, a2):
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xticks(list(table["n_basis"]))
    fig.suptitle(f"{title}: the answer against the number of basis models", y=1.0)
    fig.tight_layout()
    _save(fig, path)


# ----------------------------------------------------------------------------- serving (the bank)
SERVING_COLORS = {"bank": "#1f77b4", "dense copies": "#7f7f7f", "PEFT adapters": "#ff7f0e"}


def serving_figure(tables: list[pd.DataFrame], path: str) -> None:
    """Per collection, view and k (one panel each): tensor bytes held to serve N models,
    relative to one model, for the bank, N dense copies and (adapters) PEFT's N adapters; a
    last panel: multiply-adds per input vector relative to one dense model. From the bank
    rule's serving tables (shapes only, deterministic)."""
    sns.set_theme(style="whitegrid", context="paper")
    if not tables:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no bank built (export.ks is empty)", ha="center", va="center")
        _save(fig, path)
        return
    panels = len(tables) + 1
    cols = min(4, panels)
    rows = -(-panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.9 * rows), squeeze=False)
    ops = []
    for ax, t in zip(axes.flat, tables):
        t = t.assign(kind=t["method"].str.split(",").str[0])
        for kind, d in t.groupby("kind", sort=False):
            label = d["method"].iloc[0]
            color = SERVING_COLORS.get(kind, "black")
            ax.plot(d["N"], d["bytes_vs_one_model"], color=color, label=label, lw=1.2)
            inside = d[d["in_collection"]]
            ax.plot(inside["N"], inside["bytes_vs_one_model"], "o", color=color, ms=4)
            outside = d[~d["in_collection"]]
            ax.plot(outside["N"], outside["bytes_vs_one_model"], "o", color=color, ms=4, mfc="white")
            dense = t.loc[t["kind"] == "dense copies", "multiply_adds_per_row"].iloc[0]
            ops.append({"panel": f"{t['collection'].iloc[0]}\n[{t['view'].iloc[0]}]", "method": label.split(",")[0],
                        "relative": d["multiply_adds_per_row"].iloc[0] / dense})
        ax.set(xscale="log", yscale="log", xlabel="models served N",
               ylabel="bytes / one model", title=f"{t['collection'].iloc[0]} [{t['view'].iloc[0]}] k={t['k'].iloc[0]}")
        ax.title.set_fontsize(8)
        ax.legend(fontsize=6, loc="upper left")
    ax = axes.flat[len(tables)]
    d = pd.DataFrame(ops).drop_duplicates(["panel", "method"])
    sns.barplot(data=d, y="panel", x="relative", hue="method", palette=SERVING_COLORS, ax=ax, orient="h")
    ax.axvline(1, color="black", lw=0.8)
    ax.set(xlabel="multiply-adds per row / one dense model", ylabel="")
    ax.tick_params(axis="y", labelsize=6)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.set_title("compute per input vector", fontsize=8)
    for extra in list(axes.flat)[panels:]:
        extra.axis("off")
    fig.tight_layout()
    _save(fig, path)


TRANSFER_PALETTE = {"own": "#1f77b4", "transfer": "#ff7f0e", "transfer_a_mean": "#9467bd", "random": "#d62728"}
TRANSFER_LINES = {"original": ("black", "--"), "mean": ("#7f7f7f", ":"), "a_mean": ("#8c564b", "-.")}


def transfer_figure(energy: pd.DataFrame, proj: pd.DataFrame | None, summary: dict, path: str) -> None:
    """One transfer pair A → B (``weightspace.transfer``): B's held-out models on A's subspace
    against k (task metric, relative error) beside B's own subspace, a random one and the means
    (lines); and per matrix and mode the share of B's centred energy A's top-k capture, beside
    B's own top-k and a random k-subspace's k/d."""
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(1, 3, figsize=(19, 4.6), gridspec_kw={"width_ratios": [1, 1, 1.1]})
    a, b, k = summary["a"], summary["b"], summary["k"]
    if proj is not None and len(proj):
        split = "heldout" if (proj["split"] == "heldout").any() else "basis"
        d = proj[proj["split"] == split]
        cols = [("accuracy", f"B's task {metric_name(d)}")] if has_accuracy(d) else []
        cols.append(("rel_error", "‖Ŵ − W‖ / ‖W‖"))
        for ax, (col, label) in zip(axes[:2], cols):
            swept = d[d["method"].isin(TRANSFER_PALETTE)]
            sns.lineplot(data=swept, x="k", y=col, hue="method", hue_order=list(TRANSFER_PALETTE),
                         palette=TRANSFER_PALETTE, marker="o", errorbar=t_interval, ax=ax)
            for method, (color, ls) in TRANSFER_LINES.items():
                ref = d[d["method"] == method]
                if len(ref) and not (method == "original" and col == "rel_error"):
                    ax.axhline(ref[col].mean(), color=color, ls=ls, lw=1, label=f"{method} ({ref[col].mean():.3f})")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("k (directions per mode)")
            ax.set_ylabel(label)
            ax.set_title(f"B's {split} models (n={d['model'].nunique()}), mean ± 95% CI")
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        if len(cols) == 1:
            axes[1].set_axis_off()
    else:
        for ax in axes[:2]:
            ax.set_axis_off()
        axes[0].text(0.5, 0.5, "other architectures:\nno projection, only the modes where they meet",
                     ha="center", va="center", transform=axes[0].transAxes)
    ax = axes[2]
    t = energy[energy["tested"].astype(bool)].copy()
    if len(t):
        t["label"] = [f"{r.b_matrix}:{r.mode} ({'✓' if r.transfers else '✗'})" for r in t.itertuples()]
        y = np.arange(len(t))
        ax.barh(y - 0.2, t["captured"], height=0.4, color="#ff7f0e", label="A's top-k")
        ax.barh(y + 0.2, t["own"], height=0.4, color="#1f77b4", label="B's own top-k")
        ax.scatter(t["random"], y, marker="|", s=200, color="black", zorder=3, label="random k-subspace (k/d)")
        ax.set_yticks(y, t["label"], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, frameon=False)  # under the bars
    ax.set_xlabel(f"share of B's centred energy captured at k = {k}")
    ax.set_title("per matrix and mode (✓ transfers)")
    fig.suptitle(f"{a} → {b} [{summary['view']}]: A's subspace {summary['verdict']} "
                 f"({summary['rows_transfer']} of {summary['rows_tested']} matrix modes; median share of B's own "
                 f"{summary['median_ratio']:.2f})", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def transfer_matrix_figure(summary: pd.DataFrame, path: str) -> None:
    """Collections × collections (row A's subspace, column B's models): the median over tested
    matrix modes of where A's captured energy sits between a random k-subspace (0) and B's own
    top-k (1), annotated with the ratio to B's own and the modes that transfer out of those
    tested; the diagonal (a collection's own subspace) is 1."""
    sns.set_theme(style="white", context="paper")
    names = list(dict.fromkeys([*summary["a"], *summary["b"]]))
    value = pd.DataFrame(np.nan, index=names, columns=names)
    note = pd.DataFrame("", index=names, columns=names)
    for n in names:
        value.loc[n, n], note.loc[n, n] = 1.0, "own"
    for r in summary.itertuples():
        value.loc[r.a, r.b] = r.median_above_chance
        note.loc[r.a, r.b] = (f"{r.median_above_chance:.2f} (ratio {r.median_ratio:.2f})\n"
                              f"{r.rows_transfer} of {r.rows_tested} modes")
    fig, ax = plt.subplots(figsize=(1.7 * len(names) + 2.5, 1.1 * len(names) + 1.6))
    sns.heatmap(value.astype(float), annot=note, fmt="", vmin=0, vmax=1, cmap="viridis", ax=ax,
                cbar_kws={"label": "above chance: (A's − random) / (B's own − random), median"},
                annot_kws={"fontsize": 7})
    ax.set_xlabel("B: whose models")
    ax.set_ylabel("A: whose subspace")
    ax.set_title("Does A's subspace explain B's models? Cells: share of B's centred energy A's top-k capture,\n"
                 "0 = a random k-subspace, 1 = B's own top-k (ratio to B's own in brackets); modes that transfer",
                 fontsize=9)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    plt.setp(ax.get_yticklabels(), rotation=0)
    fig.tight_layout()
    _save(fig, path)
