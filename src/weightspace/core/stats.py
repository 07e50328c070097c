"""The statistics the tables report: confidence intervals of means, and the sharing test's
empirical p-values, Benjamini–Hochberg and a view's calls (numpy only: a job that reads
results needs no torch; the null draws and the statistic are in ``core.sharing``)."""

from __future__ import annotations

import numpy as np


def ci95(values) -> float:
    """Half-width of the 95% confidence interval of a mean: t_{0.975, n−1} · sd / √n (NaN for n < 2)."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) < 2:
        return float("nan")
    return float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))


def explained_variance(eigs, total: float | None = None):
    """Cumulative explained variance (a numpy array or a torch tensor, the same kind back):
    entry k−1 is Σ_{j≤k} λ_j / Σ_j λ_j, where the total (the trace of the Gram) may be given
    when ``eigs`` holds only the leading eigenvalues."""
    total = float(eigs.sum()) if total is None else float(total)
    if total <= 0:
        return eigs * 0
    return eigs.cumsum(0) / total


def empirical_p(t: float, null: np.ndarray, max_draws: int | None = None) -> float:
    """(1 + #{null ≥ t}) / (1 + R): exact under exchangeability, at least 1/(1 + R). A null
    stopped early (fewer than ``max_draws`` draws: Besag & Clifford's sequential test, which
    stops once h draws reach the statistic) gives #{null ≥ t} / l for its l draws: still a valid
    p-value, and at least h/l ≥ h/R."""
    null = np.asarray(null, dtype=float)
    if max_draws is not None and len(null) < max_draws:
        return float(max(1, np.sum(null >= t)) / len(null))
    return float((1 + np.sum(null >= t)) / (1 + len(null)))


def z_score(t: float, null: np.ndarray) -> float:
    """(t − mean) / sd of the null draws (an effect size; inf when the draws do not vary)."""
    null = np.asarray(null, dtype=float)
    sd = null.std(ddof=1) if len(null) > 1 else 0.0
    return float((t - null.mean()) / sd) if sd > 0 else float(np.inf if t > null.mean() else 0.0)


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (scipy's ``false_discovery_control``): reject at
    FDR q where the adjusted value is ≤ q."""
    from scipy.stats import false_discovery_control

    p = np.asarray(p, dtype=float)
    return false_discovery_control(p, method="bh") if len(p) else p


def shared_calls(statistics, null_draws, margin: float, fdr: float, max_draws=None):
    """The test of a view's matrices j: p_j = empirical_p(T_j, null_j + margin, R_j),
    q = benjamini_hochberg(p), and matrix j called shared where q_j ≤ fdr. ``max_draws``: R per
    matrix (a list) or for all (None: every null complete). Returns (p, q, calls)."""
    R = max_draws if isinstance(max_draws, (list, tuple, np.ndarray)) else [max_draws] * len(statistics)
    p = np.array([empirical_p(T, np.asarray(d, dtype=float) + margin, r)
                  for T, d, r in zip(statistics, null_draws, R)])
    q = benjamini_hochberg(p)
    return p, q, q <= fdr


def min_detectable_share(draws: int, q: float) -> float:
    """The smallest share of a view's matrices that BH at FDR q can call shared when their
    p-values sit at the floor 1/(1 + R): s/m ≥ (1/(1+R)) / q."""
    return min(1.0, 1.0 / ((1 + draws) * q))


def view_called(statistics, null_draws, margin: float, fdr: float, share: float, max_draws=None) -> bool:
    """A view's verdict at ``margin``: at least ``share`` of its matrices called shared."""
    if not len(statistics):
        return False
    calls = shared_calls(statistics, null_draws, margin, fdr, max_draws)[2]
    return bool(calls.sum() >= share * len(calls))


def flip_margin(statistics, null_draws, fdr: float, share: float, hi: float = 1.0, tol: float = 1e-4,
                max_draws=None) -> float:
    """The largest margin at which the view is still called shared (NaN: not shared even at
    margin 0). Each p grows with the margin and BH's rejections shrink as the p-values grow, so
    the verdict is shared up to this margin and not shared beyond it: a view called shared flips
    just above it, a view called not shared would be called shared at any margin up to it.
    Bisection on [0, hi] to ``tol``."""
    def called(margin):
        return view_called(statistics, null_draws, margin, fdr, share, max_draws)

    if not called(0.0):
        return float("nan")
    lo = 0.0
    if called(hi):
        return hi
    while hi - lo > tol:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if called(mid) else (lo, mid)
    return lo
