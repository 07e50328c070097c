"""Figures (seaborn): spectra against nulls, accuracy against k, compression against accuracy.

Every figure shows the baselines beside the result: the Gaussian and rotation nulls beside
the spectra, the mean / random / per-model SVD baselines and the original models beside the
projected ones, basis and held-out models side by side.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .io import atomic_path  # noqa: E402

METHOD_ORDER = ["projected", "svd", "random", "mean"]
PALETTE = {"projected": "#1f77b4", "svd": "#2ca02c", "random": "#d62728", "mean": "#7f7f7f"}
SOURCE_STYLE = {"data": "-", "Gaussian null": "--", "rotation null": ":"}


def _save(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)


def spectra_figure(spectra: pd.DataFrame, title: str, path: str, max_k: int = 64) -> None:
    """2×2 panels: rows = (centred vs Gaussian null, uncentred vs rotation null), columns =
    (row mode, column mode); thin lines per layer, bold mean ± 95% CI over layers."""
    sns.set_theme(style="whitegrid", context="paper")
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
                         hue_order=sources, style_order=sources, errorbar=("ci", 95), lw=2,
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
    """All collections in one figure: row-mode explained variance against both nulls."""
    sns.set_theme(style="whitegrid", context="paper")
    d = spectra[(spectra["mode"] == "row") & (spectra["k"] <= max_k)].copy()
    d["collection"] = d["collection"] + " [" + d["view"] + "]"
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for ax, (centered, null) in zip(axes, [(True, "Gaussian null"), (False, "rotation null")]):
        dd = d[(d["centered"] == centered) & d["source"].isin(["data", null])]
        sns.lineplot(data=dd, x="k", y="explained", hue="collection", style="source",
                     style_order=["data", null], errorbar=("ci", 95), lw=1.8, ax=ax)
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("k (number of leading row-mode directions)")
        ax.set_ylabel("cumulative explained variance (mean over layers)")
        ax.set_title(("centred stack vs Gaussian null" if centered
                      else "uncentred stack vs rotation null (tests sharing)"))
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    _save(fig, path)


def accuracy_figure(metrics: pd.DataFrame, title: str, path: str) -> None:
    """Columns = split (basis, held-out); rows = task accuracy and centred relative error,
    against k for every method; the original models (and the bare base) as horizontal lines."""
    sns.set_theme(style="whitegrid", context="paper")
    splits = [s for s in ["basis", "heldout"] if s in set(metrics["split"])]
    fig, axes = plt.subplots(2, len(splits), figsize=(5.5 * len(splits), 7.5), squeeze=False, sharex=True)
    swept = metrics[metrics["method"].isin(METHOD_ORDER)]
    for c, split in enumerate(splits):
        d = swept[swept["split"] == split]
        for r, (col, label) in enumerate([("accuracy", "task accuracy"),
                                          ("rel_error_centered", "‖Ŵ − W‖ / ‖W − μ‖")]):
            ax = axes[r, c]
            sns.lineplot(data=d, x="k", y=col, hue="method", hue_order=METHOD_ORDER, palette=PALETTE,
                         marker="o", errorbar=("ci", 95), ax=ax)
            if col == "accuracy":
                for method, ls in [("original", "--"), ("base_only", ":")]:
                    ref = metrics[(metrics["split"] == split) & (metrics["method"] == method)]
                    if len(ref):
                        ax.axhline(ref["accuracy"].mean(), color="black", ls=ls,
                                   label=f"{method} (mean {ref['accuracy'].mean():.3f})")
                ax.set_ylim(0, 1.02)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("k (subspace size per mode)")
            ax.set_ylabel(label)
            ax.set_title(f"{split} models (n={d['model'].nunique()})")
            ax.legend(fontsize=7)
    fig.suptitle(title, y=1.0)
    fig.tight_layout()
    _save(fig, path)


def compression_figure(metrics: pd.DataFrame, compression: pd.DataFrame, title: str, path: str) -> None:
    """Mean task accuracy against stored bytes relative to the originals, per method and split."""
    sns.set_theme(style="whitegrid", context="paper")
    acc = (metrics[metrics["method"].isin(METHOD_ORDER)]
           .groupby(["method", "k", "split"], as_index=False)["accuracy"].mean())
    d = acc.merge(compression[["method", "k", "compression"]], on=["method", "k"])
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    sns.lineplot(data=d, x="compression", y="accuracy", hue="method", hue_order=METHOD_ORDER,
                 palette=PALETTE, style="split", markers=True, sort=True, ax=ax)
    orig = metrics[metrics["method"] == "original"]["accuracy"].mean()
    ax.axhline(orig, color="black", ls="--", label=f"original (bytes 1.0, acc {orig:.3f})")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("stored bytes / bytes of the original models")
    ax.set_ylabel("mean task accuracy")
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
