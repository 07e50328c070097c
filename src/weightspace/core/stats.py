"""Confidence intervals of the means the tables report."""

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
