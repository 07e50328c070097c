"""The spectra rule's tables: every stored spectrum of a view (data and nulls), the sharing
test per matrix, and a view's line of the verdict.

Read from the subspace stage's group stores without torch (numpy, pandas, zarr): the spectra
and overview jobs only read results, and importing torch is most of such a job's time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import zarr

from . import layers
from .core import stats


def stored_targets(paths: list[str]) -> tuple[dict[str, zarr.Group], list[str]]:
    """Every target's Zarr group in a view's group stores (``subspace.write_group``), and the
    basis model keys."""
    out, models = {}, None
    for p in paths:
        root = zarr.open_group(str(p), mode="r")
        models = models or list(root.attrs["models"])
        for name in root.attrs["targets"]:
            out[name] = root[name]
    return out, models or []


SPECTRA = {  # array in the store → (mode, centred, source)
    "eig_row": ("row", True, "data"), "eig_col": ("col", True, "data"), "eig_model": ("model", True, "data"),
    "eig_row_uncentered": ("row", False, "data"), "eig_col_uncentered": ("col", False, "data"),
    "null_gaussian_row": ("row", True, "Gaussian null"), "null_gaussian_col": ("col", True, "Gaussian null"),
    "null_rotation_row": ("row", False, "rotation null"), "null_rotation_col": ("col", False, "rotation null"),
}


def spectra_table(paths: list[str]) -> pd.DataFrame:
    """Long table of every stored spectrum: target, mode, centred, source, k, eigenvalue and
    cumulative explained variance at k."""
    groups, _ = stored_targets(paths)
    frames = []
    for name, g in groups.items():
        attrs = dict(g.attrs)
        for key in sorted(g.array_keys()):
            if key not in SPECTRA:
                continue
            mode, centered, source = SPECTRA[key]
            lam = np.asarray(g[key][...])
            total = (attrs.get("null_gaussian_total") if source == "Gaussian null"
                     else attrs.get("total" if centered else "total_uncentered"))
            frames.append(pd.DataFrame({
                "target": name, "shape": "×".join(map(str, attrs["shape"])), "mode": mode,
                "centered": centered, "source": source, "k": np.arange(1, len(lam) + 1),
                "eigenvalue": lam, "explained": stats.explained_variance(lam, total)}))
    return pd.concat(frames, ignore_index=True)


EXCESS_KS = (4, 16)  # the verdict's excess columns


def sharing_table(paths: list[str], fdr: float = 0.05, margin: float = 0.0, share: float = 0.5) -> pd.DataFrame:
    """One row per matrix of a view: the sharing statistic T (``core.sharing``), the mean and
    spread of its rotation-null draws, z, the empirical p of T against draw + ``margin``, the
    Benjamini–Hochberg q across the view's matrices, ``shared`` (q ≤ fdr), the excess of T over
    the null mean per mode (``excess_row``, ``excess_col``: which side is shared) and the excess
    uncentred explained variance over the mean null at k = 4 and 16 (mean of the tested modes).
    Matrices without a test (no rotation null, or only sketched modes) have empty test columns
    and are not counted. ``ceiling``: the largest excess the matrix could show with this many
    basis models (``sharing.ceiling_area``, mean over its tested modes); where it is not above
    the margin the matrix cannot be called shared at this N (``callable`` false) and is left
    out of the test and the share. ``view_flip_margin`` (one value for the view): the largest
    margin at which the view would still be called shared with ``share`` (``stats.flip_margin``)."""
    groups, _ = stored_targets(paths)
    rows, nulls, max_draws = [], {}, {}
    for name, g in sorted(groups.items()):
        attrs = dict(g.attrs)
        test = attrs.get("sharing") or {}
        modes = test.get("modes", [])
        row = {"target": name, "shape": "×".join(map(str, attrs["shape"])), "statistic": test.get("statistic")}
        if test:
            draws = np.asarray(g["null_rotation_statistic"][...])  # R × modes
            t_null = draws.mean(1)
            nulls[name], max_draws[name] = t_null, int(test.get("max_draws", len(t_null)))
            row.update(null_mean=float(t_null.mean()), null_sd=float(t_null.std(ddof=1)),
                       z=stats.z_score(test["statistic"], t_null), draws=len(t_null), max_draws=max_draws[name],
                       K=test["K"],
                       ceiling=test.get("ceiling", np.nan))
            for j, mode in enumerate(modes):
                row[f"excess_{mode}"] = test["mode_statistic"][j] - float(draws[:, j].mean())
        curves = [[stats.explained_variance(np.asarray(g[key][...]), attrs["total_uncentered"])
                   for key in (f"eig_{mode}_uncentered", f"null_rotation_{mode}")] for mode in modes]
        for k in EXCESS_KS:
            ex = [float(data[min(k, len(data)) - 1] - null[min(k, len(null)) - 1]) for data, null in curves]
            row[f"excess_k{k}"] = float(np.mean(ex)) if ex else None
        rows.append(row)
    table = pd.DataFrame(rows)
    for col in ("null_mean", "null_sd", "z", "draws", "max_draws", "K", "excess_row", "excess_col", "ceiling"):
        if col not in table:
            table[col] = np.nan
    table["callable"] = ~(table["ceiling"] <= margin)  # unknown (no ceiling stored): callable
    tested = table["target"].isin(list(nulls)) & table["callable"]
    names = list(table.loc[tested, "target"])
    p, q, calls = stats.shared_calls(table.loc[tested, "statistic"].to_numpy(float), [nulls[n] for n in names],
                                     margin, fdr, [max_draws[n] for n in names])
    table["p"], table["q"] = np.nan, np.nan
    table.loc[tested, "p"], table.loc[tested, "q"] = p, q
    table["shared"] = pd.array([pd.NA] * len(table), dtype="boolean")
    table.loc[tested, "shared"] = calls
    table["view_flip_margin"] = stats.flip_margin(table.loc[tested, "statistic"].to_numpy(float),
                                                    [nulls[n] for n in names], fdr, share,
                                                    max_draws=[max_draws[n] for n in names])
    table = table.iloc[sorted(range(len(table)), key=lambda i: layers.depth_key(table["target"].iloc[i]))]
    return table[["target", "shape", "statistic", "null_mean", "null_sd", "z", "p", "q", "shared",
                  "excess_row", "excess_col", *[f"excess_k{k}" for k in EXCESS_KS], "ceiling", "callable",
                  "draws", "max_draws", "K", "view_flip_margin"]].reset_index(drop=True)


def view_verdict(table: pd.DataFrame, fdr: float, share: float) -> dict:
    """A view's line of the verdict from its ``sharing_table``: matrices tested and called
    shared, and whether that is at least ``share`` of them; matrices that cannot be called at
    this N (left out); the margin at which the call flips; the p floor 1/(1 + R) and the
    smallest share BH can call at that floor; median excess at k = 4 and 16."""
    tested = table[table["p"].notna()]
    n, x = len(tested), int(tested["shared"].sum()) if len(tested) else 0
    draws = int(tested["max_draws"].max()) if n else 0  # R: the p floor of a null that used every draw
    uncallable = int((table["callable"] == False).sum()) if "callable" in table else 0  # noqa: E712
    flip = table["view_flip_margin"].iloc[0] if "view_flip_margin" in table and len(table) else np.nan
    return {"verdict": ("no test" if n == 0 else "shared" if x >= share * n else "not shared"),
            "matrices_shared": x, "matrices_tested": n, "matrices_uncallable": uncallable,
            "flip_margin": float(flip), "p_floor": 1 / (1 + draws) if draws else np.nan,
            "min_detectable_share": stats.min_detectable_share(draws, fdr) if draws else np.nan,
            **{f"median_excess_k{k}": float(tested[f"excess_k{k}"].median()) if n else None for k in EXCESS_KS}}
