"""Figures (seaborn): spectra against nulls, accuracy against k, compression against accuracy.

Every figure shows the baselines beside the result: the Gaussian and rotation nulls beside
the spectra, the mean / random / per-model SVD baselines and the original models beside the
projected ones, basis and held-out models side by side.
"""

from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.lines  # noqa: E402
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .io import atomic_path  # noqa: E402

METHOD_ORDER = ["projected", "svd", "random", "mean"]
PALETTE = {"projected": "#1f77b4", "svd": "#2ca02c", "random": "#d62728", "mean": "#7f7f7f"}
SOURCE_STYLE = {"data": "-", "Gaussian null": "--", "rotation null": ":"}


def pad_spectra(spectra: pd.DataFrame, max_k: int) -> pd.DataFrame:
    """Extend every spectrum's cumulative explained variance to k = max_k.

    A mode of dimension d < max_k is fully explained from k = d on (the value is 1), so
    averaging layers of different sizes stays monotone instead of dropping where small
    layers run out of directions.
    """
    keys = [c for c in spectra.columns if c not in ("k", "eigenvalue", "explained")]
    out = []
    for _, d in spectra[spectra["k"] <= max_k].groupby(keys, sort=False):
        last = d["k"].max()
        if last < max_k:
            extra = d.iloc[[-1] * (max_k - last)].copy()
            extra["k"] = range(last + 1, max_k + 1)
            extra["eigenvalue"] = 0.0
            d = pd.concat([d, extra])
        out.append(d)
    return pd.concat(out, ignore_index=True)


def _save(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)


def spectra_figure(spectra: pd.DataFrame, title: str, path: str, max_k: int = 64) -> None:
    """2×2 panels: rows = (centred vs Gaussian null, uncentred vs rotation null), columns =
    (row mode, column mode); thin lines per layer, bold mean ± 95% CI over layers."""
    sns.set_theme(style="whitegrid", context="paper")
    spectra = pad_spectra(spectra, max_k)
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5), sharey=True)
    panels = [(True, ["data", "Gaussian null"]), (False, ["data", "rotation null"])]
    for r, (centered, sources) in enumerate(panels):
        for c, mode in enumerate(["row", "col"]):
            ax = axes[r, c]
            d = spectra[(spectra["mode"] == mode) & (spectra["centered"] == centered)
                        & spectra["source"].isin(sources) & (spectra["k"] <= max_k)]
            for target, dt in d[d["source"] == "data"].groupby("target"):
                ax.plot(dt["k"], dt["explained"], color="#1f77b4", alpha=0.25, lw=0.8)
            sns.lineplot(data=d, x="k", y="explained", hue="source", style="source",
                         hue_order=sources, style_order=sources, errorbar=("ci", 95), seed=0, lw=2,
                         err_kws={"alpha": 0.12},
                         palette={"data": "#1f77b4", "Gaussian null": "#d62728", "rotation null": "#ff7f0e"},
                         ax=ax)
            ax.set_xscale("log", base=2)
            ax.set_ylim(0, 1.02)
            ax.set_xlabel("k (number of leading directions)")
            ax.set_ylabel("cumulative explained variance")
            ax.set_title(f"{mode} mode, {'centred' if centered else 'uncentred'}")
            ax.legend(title=None, loc="lower right")
    fig.suptitle(f"{title}: spectra per layer (thin) and mean ± 95% CI over layers", y=1.0)
    fig.tight_layout()
    _save(fig, path)


def overview_figure(spectra: pd.DataFrame, path: str, max_k: int = 64) -> None:
    """All collections: one column each; top = centred stack vs Gaussian null, bottom =
    uncentred stack vs rotation null; row mode, mean ± 95% CI over layers."""
    sns.set_theme(style="whitegrid", context="paper")
    d = pad_spectra(spectra[spectra["mode"] == "row"], max_k)
    d["panel"] = d["collection"] + " [" + d["view"] + "]"
    panels = list(dict.fromkeys(d["panel"]))
    fig, axes = plt.subplots(2, len(panels), figsize=(3.6 * len(panels), 6.8), sharey=True,
                             sharex=True, squeeze=False)
    colors = {"data": "#1f77b4", "Gaussian null": "#d62728", "rotation null": "#ff7f0e"}
    for c, panel in enumerate(panels):
        for r, (centered, null) in enumerate([(True, "Gaussian null"), (False, "rotation null")]):
            ax = axes[r, c]
            dd = d[(d["panel"] == panel) & (d["centered"] == centered) & d["source"].isin(["data", null])]
            sns.lineplot(data=dd, x="k", y="explained", hue="source", style="source",
                         hue_order=["data", null], style_order=["data", null], palette=colors,
                         errorbar=("ci", 95), seed=0, err_kws={"alpha": 0.12}, lw=1.8, ax=ax)
            ax.set_xscale("log", base=2)
            ax.set_ylim(0, 1.02)
            ax.set_xlabel("k (leading row-mode directions)")
            ax.set_ylabel(("centred" if centered else "uncentred") + " explained variance")
            ax.set_title(f"{panel}, {dd['target'].nunique()} layers" if r == 0 else "", fontsize=9)
            ax.legend(fontsize=7, loc="lower right", title=None)
    fig.suptitle("Row-mode spectra, mean ± 95% CI over layers: top vs Gaussian null, "
                 "bottom vs rotation null (tests sharing)", y=1.0)
    fig.tight_layout()
    _save(fig, path)


def has_accuracy(metrics: pd.DataFrame) -> bool:
    """Whether the collection has a task evaluator (else only errors and bytes are reported)."""
    return "accuracy" in metrics and metrics["accuracy"].notna().any()


def metric_name(metrics: pd.DataFrame) -> str:
    """What the ``accuracy`` column measures (the evaluator's ``metric``: ROUGE-L for causal-lm)."""
    return str(metrics["metric"].dropna().iloc[0]) if "metric" in metrics and metrics["metric"].notna().any() \
        else "accuracy"


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
                         marker="o", errorbar=("ci", 95), seed=0, ax=ax)
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
            ax.legend(fontsize=7, loc="lower right" if col == "accuracy" else "lower left")
    fig.suptitle(title if has_accuracy(metrics) else f"{title}: no task evaluator, reconstruction error only", y=1.0)
    fig.tight_layout()
    _save(fig, path)


def compression_figure(metrics: pd.DataFrame, compression: pd.DataFrame, title: str, path: str) -> None:
    """Mean task accuracy (or, without a task evaluator, mean centred relative error) against
    stored bytes relative to the originals, per method and split."""
    sns.set_theme(style="whitegrid", context="paper")
    y, ylabel = (("accuracy", f"mean task {metric_name(metrics)}") if has_accuracy(metrics)
                 else ("rel_error_centered", "mean ‖Ŵ − W‖ / ‖W − μ‖ (no task evaluator)"))
    acc = (metrics[metrics["method"].isin(METHOD_ORDER)]
           .groupby(["method", "k", "split"], as_index=False)[y].mean())
    d = acc.merge(compression[["method", "k", "compression"]], on=["method", "k"])
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    sns.lineplot(data=d, x="compression", y=y, hue="method", hue_order=METHOD_ORDER,
                 palette=PALETTE, style="split", markers=True, sort=True, ax=ax)
    if y == "accuracy":
        orig = metrics[metrics["method"] == "original"]["accuracy"].mean()
        ax.axhline(orig, color="black", ls="--", label=f"original (bytes 1.0, {orig:.3f})")
        ax.set_ylim(0, 1.02)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.3g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%.3g"))
    ax.tick_params(axis="x", which="minor", labelsize=6)
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.set_xlabel("stored bytes / bytes of the original models")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
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
        sns.heatmap(M, ax=ax, cmap="viridis", vmin=0, vmax=1, square=True,
                    cbar_kws={"label": metric.replace("_", " ")},
                    xticklabels=[f"{m} ({tasks.get(m, '')})" for m in order],
                    yticklabels=[f"{m} ({tasks.get(m, '')})" for m in order])
        ax.tick_params(labelsize=5)
        name = "original models" if variant == "original" else f"projected at k={k}"
        null = table[(table.variant == "null") & (table.metric == metric)].score.mean()
        ax.set_title(f"{name}: mean off-diagonal {off.mean():.3f} (shuffled-probe null {null:.3f})")
    fig.suptitle(f"{title}: representation alignment ({metric.replace('_', ' ')})")
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
    """Left: pair alignment, projected (y) vs original (x), per metric, with y = x. Right:
    alignment of each model with its own projection, per metric."""
    o = table[table.variant == "original"].rename(columns={"score": "original"})
    p = table[table.variant == "projected"].rename(columns={"score": "projected"})
    d = o.merge(p[["model_a", "model_b", "metric", "projected"]], on=["model_a", "model_b", "metric"])
    selfs = table[table.variant == "original~projected"]
    sns.set_theme(style="whitegrid", context="paper")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [1.2, 1]})
    sns.scatterplot(data=d, x="original", y="projected", hue="metric", s=10, alpha=0.6, ax=a1)
    a1.plot([0, 1], [0, 1], color="black", ls="--", lw=0.8, label="y = x")
    a1.set_xlim(-0.05, 1.02)
    a1.set_ylim(-0.05, 1.02)
    a1.set_xlabel("alignment of the original pair")
    a1.set_ylabel(f"alignment of the projected pair (k={k})")
    a1.legend(fontsize=7, loc="lower right")
    a1.set_title("model pairs")
    sns.boxplot(data=selfs, x="metric", y="score", ax=a2, color="#1f77b4")
    a2.set_ylim(-0.05, 1.02)
    a2.set_xlabel("")
    a2.set_ylabel(f"alignment of a model with its projection (k={k})")
    a2.tick_params(axis="x", rotation=30, labelsize=7)
    nulls = table[table.variant == "null"].groupby("metric").score.mean()
    a2.scatter(range(len(nulls)), [nulls.get(m, np.nan) for m in dict.fromkeys(selfs.metric)], marker="_",
               s=400, color="black", label="shuffled-probe null (mean)", zorder=3)
    a2.legend(fontsize=7, loc="lower left")
    a2.set_title(f"each model vs itself projected (n={selfs.model_a.nunique()})")
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
    marker per method (lines join its k), seeds' standard deviation as error bars; untrained
    starts as horizontal lines."""
    sns.set_theme(style="whitegrid", context="paper")
    sizes = sorted(summary["n_train"].unique())
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.6 * len(sizes) + 1.8, 4.2), sharey=True, squeeze=False)
    for ax, size in zip(axes[0], sizes):
        d = summary[summary["n_train"] == size]
        for method, (colour, marker) in ADAPT_STYLE.items():
            m = d[d["method"] == method].sort_values("trainable")
            if len(m):
                ax.errorbar(m["trainable"], m["accuracy"], yerr=m["seed_std"].fillna(0), color=colour,
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


def merge_figure(scores: pd.DataFrame, diagnostics: pd.DataFrame, title: str, path: str) -> None:
    """Normalised test accuracy (merged / own model) per method at its selected λ: one point per
    task, bars the mean; the individual models (1.0) and the reference alone as lines."""
    sns.set_theme(style="whitegrid", context="paper")
    d = scores[(scores["split"] == "test") & scores["selected"]]
    order = list(d.groupby("method")["normalised"].mean().sort_values(ascending=False).index)
    fig, ax = plt.subplots(figsize=(1.0 * len(order) + 3.5, 4.4))
    sns.barplot(data=d, x="method", y="normalised", order=order, color="#aec7e8", errorbar=None, ax=ax)
    sns.stripplot(data=d, x="method", y="normalised", order=order, hue="task", jitter=False, dodge=False,
                  size=5, palette="tab10", ax=ax)
    ax.axhline(1.0, color="black", ls="--", lw=1.2, label="individual models (1.0)")
    ref = float(diagnostics["reference_alone"].mean())
    ax.axhline(ref, color="black", ls=":", lw=1.2, label=f"{d['reference'].iloc[0]} alone ({ref:.2f})")
    lams = d.groupby("method")["lam"].first()
    lam = {m: {"mean": "1/N", "subspace_mean": "–"}.get(m, f"{lams[m]:g}") for m in order}
    ax.set_xticks(range(len(order)), [m if m == "subspace_mean" else f"{m}\nλ={lam[m]}" for m in order])
    ax.set_xlabel("merge method (λ picked on validation data where tuned)")
    ax.set_ylabel("normalised accuracy (merged / own model)")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False, title="task")
    ax.set_title("\n".join(textwrap.fill(line, 100) for line in title.split("\n")), fontsize=9)
    fig.tight_layout()
    _save(fig, path)
