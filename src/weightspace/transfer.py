r"""The transfer stage: does collection A's subspace explain collection B's models?

The hypothesis says models of one architecture trained on different data share one subspace;
the sharing test (:mod:`weightspace.subspace`) can only say a collection shares one within
itself. For an ordered pair (A, B) of collections with matrices of the same shapes:

1. ``projection_table``: each of B's models (basis and held-out) projected onto A's subspace at
   every k, with B's mean (``transfer``) and with A's mean (``transfer_a_mean``, the stronger
   claim: A's whole model of the weights), beside B's own subspace (``own``; held-out models
   are the fair comparison), a random subspace of the same k (``random``), B's mean alone
   (``mean``) and A's mean alone (``a_mean``): relative error and B's task metric.
2. ``energy_table``: per matrix and mode, the share of B's centred basis stack that A's top-k
   directions capture, its Haar-random null (empirical p, BH across the pair's rows; see
   :mod:`weightspace.core.transfer`), the ratio to what B's own top-k capture, and the overlap
   of the two top-k subspaces (against k/d for a random one). A row *transfers* when it beats
   the null by the margin at the FDR and the ratio reaches ``share_of_own``; the pair's verdict
   is "transfers" when at least ``shared_share`` of its tested rows do.
3. Across architectures (matrices of other shapes): only modes that index the same space are
   compared (``meeting_modes``): the input features of the first matrix, the outputs of the
   last, and pairs the config declares; the same energy and overlap statistics.

A mode whose dimension is at most k is not tested (every k-subspace captures all of it).
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from . import layers
from .assemble import effective_weights, model_config
from .core import stats
from .core import transfer as tr
from .core.hosvd import dense
from .project import baseline, coefficients, core_size, projection, reconstruct
from .store import ModelStore

METHODS = ("own", "transfer", "transfer_a_mean", "random", "mean", "a_mean")


def meeting_modes(a_subs: dict, b_subs: dict, declared: list | None = None) -> list[dict]:
    """The (A matrix, B matrix, mode) comparisons of a pair: every mode of every matrix both
    have with one shape (same architecture); otherwise the modes where the architectures meet:
    the column mode (input features) of each one's first matrix and the row mode (outputs) of
    its last, in depth order (``layers.depth_key``), where their dimensions agree, and the
    ``declared`` ones ([["<A matrix>:<mode>", "<B matrix>:<mode>"], …])."""
    if same_shapes(a_subs, b_subs):
        return [{"a": n, "b": n, "mode": mode, "where": "same matrix"}
                for n in sorted(a_subs, key=layers.depth_key) for mode in ("row", "col")]
    out = []
    order_a, order_b = sorted(a_subs, key=layers.depth_key), sorted(b_subs, key=layers.depth_key)
    for a, b, mode, where in ((order_a[0], order_b[0], "col", "input features"),
                              (order_a[-1], order_b[-1], "row", "outputs")):
        if _dim(a_subs[a], mode) == _dim(b_subs[b], mode):
            out.append({"a": a, "b": b, "mode": mode, "where": where})
    for left, right in declared or []:
        (a, ma), (b, mb) = left.rsplit(":", 1), right.rsplit(":", 1)
        if a not in a_subs or b not in b_subs or ma != mb or ma not in ("row", "col"):
            raise ValueError(f"transfer match {left} ~ {right}: expected '<matrix>:row|col' of each "
                             "collection, same mode")
        if _dim(a_subs[a], ma) != _dim(b_subs[b], mb):
            raise ValueError(f"transfer match {left} ~ {right}: dimensions {_dim(a_subs[a], ma)} and "
                             f"{_dim(b_subs[b], mb)} differ")
        out.append({"a": a, "b": b, "mode": ma, "where": "declared"})
    return out


def _dim(sub, mode: str) -> int:
    return sub.shape[0] if mode == "row" else sub.shape[1]


def _U(sub, mode: str) -> torch.Tensor:
    return sub.U_row if mode == "row" else sub.U_col


def centred_grams(stores: list[ModelStore], subs: dict, view: str, wanted: list[tuple[str, str]]) -> dict:
    """{(matrix, mode): Σ_i X_i X_iᵀ (row) or X_iᵀ X_i (col)} of the given stores' centred
    matrices X_i = W_i − μ (μ: the subspace's mean), one pass over the stores."""
    grams: dict = {}
    for st in tqdm(stores, desc="centred Grams", mininterval=5):
        tmap = {t.name: t for t in layers.targets(st, view)}
        for name in {n for n, _ in wanted}:
            X = dense(layers.read_target(st, tmap[name])) - subs[name].mean
            for mode in {m for n, m in wanted if n == name}:
                G = tr.mode_gram(X, mode)
                grams[(name, mode)] = grams[(name, mode)] + G if (name, mode) in grams else G
    return grams


def energy_table(a_subs: dict, b_subs: dict, grams: dict, comparisons: list[dict], k: int, draws: int,
                 seed: int, margin: float, fdr: float, share_of_own: float) -> pd.DataFrame:
    """One row per comparison (A matrix, B matrix, mode) at k: the share of B's centred energy
    that A's top-k capture (``captured``), B's own top-k (``own``), their ratio, the Haar null
    (mean, p against draws + margin, BH q), ``transfers``; the overlap of A's and B's top-k
    (``overlap``, against ``overlap_random`` = k/d) and the median principal angle;
    ``above_chance`` = (captured − k/d) / (own − k/d): 0 for a random subspace, 1 for B's own
    (the ratio alone flatters small modes, where a random k-subspace already holds k/d)."""
    rows = []
    for c in comparisons:
        d = _dim(b_subs[c["b"]], c["mode"])
        row = {"a_matrix": c["a"], "b_matrix": c["b"], "mode": c["mode"], "where": c["where"], "dim": d, "k": k}
        Ua, Ub = _U(a_subs[c["a"]], c["mode"]), _U(b_subs[c["b"]], c["mode"])
        kk = min(k, Ua.shape[1], Ub.shape[1])
        if d <= k or kk < k:
            rows.append({**row, "tested": False})
            continue
        G = grams[(c["b"], c["mode"])]
        name = f"{c['a']}~{c['b']}:{c['mode']}"
        g = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63))
        null = tr.haar_energy_draws(G, k, draws, g)
        captured, own = tr.captured_energy(Ua[:, :k], G), tr.own_energy(G, k)
        chance = tr.random_overlap(k, d)  # a random k-subspace's expected capture and overlap: k/d
        angles = tr.principal_angles(Ua[:, :k], Ub[:, :k])
        rows.append({**row, "tested": True, "captured": captured, "own": own,
                     "ratio": captured / own if own > 0 else np.nan, "random": chance,
                     "above_chance": tr.above_chance(captured, own, chance),
                     "null_mean": float(null.mean()), "p": stats.empirical_p(captured, null + margin),
                     "overlap": tr.overlap(Ua[:, :k], Ub[:, :k]), "overlap_random": chance,
                     "median_angle": float(np.median(angles)), "draws": draws})
    table = pd.DataFrame(rows)
    for col in ("captured", "own", "ratio", "random", "above_chance", "null_mean", "p", "overlap", "overlap_random",
                "median_angle", "draws"):
        if col not in table:
            table[col] = np.nan
    tested = table["tested"].astype(bool)
    table["q"] = np.nan
    table.loc[tested, "q"] = stats.benjamini_hochberg(table.loc[tested, "p"].to_numpy(float))
    table["transfers"] = pd.array([pd.NA] * len(table), dtype="boolean")
    table.loc[tested, "transfers"] = (table.loc[tested, "q"] <= fdr) & (table.loc[tested, "ratio"] >= share_of_own)
    return table


def pair_verdict(energy: pd.DataFrame, share: float) -> dict:
    """The pair's line: rows tested and transferring, the verdict (at least ``share`` of the
    tested rows transfer), and the medians of the ratio to B's own and of the overlap."""
    t = energy[energy["tested"].astype(bool)]
    n, x = len(t), int(t["transfers"].sum()) if len(t) else 0
    return {"verdict": "no test" if n == 0 else "transfers" if x >= share * n else "does not transfer",
            "rows_transfer": x, "rows_tested": n,
            "median_captured": float(t["captured"].median()) if n else np.nan,
            "median_ratio": float(t["ratio"].median()) if n else np.nan,
            "median_random": float(t["random"].median()) if n else np.nan,
            "median_above_chance": float(t["above_chance"].median()) if n else np.nan,
            "median_overlap": float(t["overlap"].median()) if n else np.nan,
            "where": ", ".join(sorted(set(t["where"]))) if n else ""}


def projection_table(stores: list[ModelStore], a_subs: dict, b_subs: dict, view: str, ks: list[int],
                     evaluator, splits: dict[str, str], seed: int = 0) -> pd.DataFrame:
    """One row per (B model, method, k) (see the module docstring): ``rel_error`` ‖Ŵ − W‖/‖W‖,
    ``rel_error_centered`` ‖Ŵ − W‖/‖W − μ_B‖ over all matrices, and the task metric."""
    names = sorted(b_subs)
    base = evaluator.base_weights() if view in ("factors", "delta") else None
    scored = getattr(evaluator, "scores", True) and (base is not None or view == "full")
    rows = []
    for st in tqdm(stores, desc="transfer: project", mininterval=5):
        cfg, tmap = model_config(st), {t.name: t for t in layers.targets(st, view)}
        W = {n: dense(layers.read_target(st, tmap[n])) for n in names}
        norm2 = sum(float((w ** 2).sum()) for w in W.values())
        cnorm2 = sum(float(((W[n] - b_subs[n].mean) ** 2).sum()) for n in names)

        def record(method, k, mats, _st=st, _cfg=cfg, _W=W, _n=norm2, _c=cnorm2):
            err2 = sum(float(((mats[n] - _W[n]) ** 2).sum()) for n in names)
            score = (evaluator.score(_cfg, effective_weights(view, _st, mats, base)) if scored
                     else {"accuracy": float("nan")})
            rows.append({"model": _st.key, "split": splits.get(_st.key, "?"), "method": method, "k": k,
                         "rel_error": (err2 / _n) ** 0.5 if _n > 0 else np.nan,
                         "rel_error_centered": (err2 / _c) ** 0.5 if _c > 0 else np.nan,
                         "metric": evaluator.metric, **score})

        record("original", np.nan, W)
        record("mean", np.nan, {n: b_subs[n].mean for n in names})
        record("a_mean", np.nan, {n: a_subs[n].mean for n in names})
        for k in ks:
            mats = {m: {} for m in ("own", "transfer", "transfer_a_mean", "random")}
            for n in names:
                a, b = a_subs[n], b_subs[n]
                mats["own"][n] = projection(coefficients(W[n], b.mean, b.U_row, b.U_col), b, k)
                kr, kc = core_size(k, a.U_row, a.U_col)
                Ur, Uc = a.U_row[:, :kr], a.U_col[:, :kc]
                mats["transfer"][n] = reconstruct(coefficients(W[n], b.mean, Ur, Uc), b.mean, Ur, Uc)
                mats["transfer_a_mean"][n] = reconstruct(coefficients(W[n], a.mean, Ur, Uc), a.mean, Ur, Uc)
                mats["random"][n] = baseline("random", W[n], b.mean, k, seed=seed + zlib.crc32(n.encode()) + 1000 * k)
            for method, m in mats.items():
                record(method, k, m)
    return pd.DataFrame(rows)


def same_shapes(a_subs: dict, b_subs: dict) -> bool:
    """True when every matrix has one shape in both (a projection is possible); False when the
    architectures differ (only meeting modes are compared)."""
    return set(a_subs) == set(b_subs) and all(a_subs[n].shape == b_subs[n].shape for n in a_subs)


def summary_row(a: str, b: str, view: str, energy: pd.DataFrame, proj: pd.DataFrame | None, k: int,
                share: float) -> dict:
    """The pair's row of results/transfer/summary.csv: the verdict (``pair_verdict``) and, where
    B's models could be projected, held-out B models at k: error and task metric of each method."""
    row = {"a": a, "b": b, "view": view, "k": k, **pair_verdict(energy, share)}
    if proj is not None and len(proj):
        held = proj[proj["split"] == "heldout"]
        held = held if len(held) else proj
        row["models"] = int(held["model"].nunique())
        row["models_split"] = "heldout" if (proj["split"] == "heldout").any() else "all"
        for method in ("original", *METHODS):
            d = held[(held["method"] == method) & ((held["k"] == k) | held["k"].isna())]
            row[f"error_{method}"] = float(d["rel_error"].mean()) if len(d) else np.nan
            if "accuracy" in d:
                row[f"accuracy_{method}"] = float(d["accuracy"].mean()) if len(d) else np.nan
    return row
