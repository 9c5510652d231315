"""Statistics a reviewer accepts: Student-t intervals, paired tests on per-image differences, Holm.

* :func:`t_interval` — mean and half-width of the two-sided Student-t confidence interval,
  ``t_{1-α/2, n-1} · s / √n`` over the *finite* values (``n`` counts only those).
* :func:`paired_pvalues` — each row against the best row of its table, on the images both scored: the
  Wilcoxon signed-rank test (two-sided) of the per-image differences.  Why Wilcoxon rather than a paired
  bootstrap: per-image SR score differences are skewed and heavy-tailed (a few hard images dominate), test
  sets run from 7 to 3000 images, and a table must be reproducible.  Wilcoxon makes no normality
  assumption, is exact for small sets (scipy's exact null distribution up to 50 pairs), deterministic
  (no resampling seed), and vectorised; a percentile bootstrap is anti-conservative at n ≲ 20 and costs
  10⁴ resamples per comparison.  What it tests is a shift of the differences' distribution (its
  pseudo-median), not the difference of means shown in the table: with symmetric differences they agree.
* :func:`holm` — Holm's step-down correction (Holm 1979, Scand. J. Statist. 6:65-70) over the comparisons
  of one table column: the best is significantly best only where every adjusted p-value is below α.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence

import numpy as np

ALPHA = 0.05


def finite(values: Iterable[float | None]) -> np.ndarray:
    """The finite values (None, NaN and ±inf dropped) as float64."""
    arr = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return arr[np.isfinite(arr)]


def t_interval(values: Iterable[float | None], level: float = 0.95) -> tuple[float | None, float | None, int]:
    """(mean, half-width of the Student-t interval, n) over the finite values; no interval below n = 2."""
    from scipy import stats

    vals = finite(values)
    n = int(vals.size)
    if n == 0:
        return None, None, 0
    mean = float(vals.mean())
    if n == 1:
        return mean, None, 1
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * vals.std(ddof=1) / math.sqrt(n))
    return mean, half, n


def paired_pvalues(best: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Two-sided Wilcoxon signed-rank p-value of each row of ``others`` (k, n) against ``best`` (n,).

    Columns are images in the same order; a NaN on either side drops that image from that comparison.
    Rows with fewer than 2 paired images get NaN; rows identical to ``best`` on every image get 1.
    """
    others = np.atleast_2d(np.asarray(others, dtype=np.float64))
    return wilcoxon_rows(others - np.asarray(best, dtype=np.float64)[None, :])


def wilcoxon_rows(diff: np.ndarray) -> np.ndarray:
    """Two-sided Wilcoxon signed-rank p-value of each row of paired differences ``diff`` (k, n), in one
    vectorised call (the rows of many tables at once); the rules of :func:`paired_pvalues`."""
    from scipy import stats

    diff = np.array(np.atleast_2d(diff), dtype=np.float64)
    diff[~np.isfinite(diff)] = np.nan
    out = np.full(diff.shape[0], np.nan)
    n_pairs = np.isfinite(diff).sum(axis=1)
    nonzero = (np.nan_to_num(diff) != 0).sum(axis=1)
    out[(n_pairs >= 2) & (nonzero == 0)] = 1.0
    todo = (n_pairs >= 2) & (nonzero > 0)
    # scipy picks exact / permutation / normal approximation from ties and zeros in the *whole* array it is
    # given: rows are tested in batches that agree on that, so each row gets what testing it alone gives
    complete = np.isfinite(diff).all(axis=1)
    sorted_abs = np.sort(np.abs(diff), axis=1)
    tied = (sorted_abs[:, 1:] == sorted_abs[:, :-1]).any(axis=1) | (diff == 0).any(axis=1)
    batches = [np.flatnonzero(todo & complete & ~tied), np.flatnonzero(todo & complete & tied)]
    batches += [np.array([i]) for i in np.flatnonzero(todo & ~complete)]  # NaNs: scipy drops them per row
    for rows in batches:
        if rows.size:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # scipy's note on ties / normal approximation
                res = stats.wilcoxon(diff[rows], axis=1, nan_policy="omit", zero_method="wilcox")
            out[rows] = np.asarray(res.pvalue, dtype=np.float64)
    return out


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values (NaN stays NaN and is not counted among the comparisons)."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = idx.size
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out[order] = adjusted
    return out


def seed_sd(means: Sequence[float | None]) -> float | None:
    """Standard deviation (ddof = 1) of a row's per-seed means; None for fewer than two seeds."""
    vals = finite(means)
    return float(vals.std(ddof=1)) if vals.size >= 2 else None
