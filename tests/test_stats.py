"""srbench.stats against scipy's own distributions and tests, and against hand-checked values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from srbench.stats import holm, paired_pvalues, seed_sd, t_interval


def test_t_interval_is_wider_than_the_normal_one_for_small_n() -> None:
    values = [10.0, 22.0, 8.0, 17.0, 25.0]  # sd 7.04: the case of n = 5
    mean, half, n = t_interval(values)
    sd = np.std(values, ddof=1)
    assert n == 5 and mean == pytest.approx(16.4)
    assert half == pytest.approx(2.7764451 * sd / math.sqrt(5))  # t_{0.975, 4}
    assert half / (1.96 * sd / math.sqrt(5)) == pytest.approx(1.4165, abs=1e-4)  # ±7.49 where 1.96 gave ±5.29


def test_t_interval_counts_finite_values_only() -> None:
    assert t_interval([1.0, float("nan"), None, float("inf"), 3.0]) == (
        2.0,
        pytest.approx(12.7062, abs=1e-4),
        2,
    )  # t_{0.975, 1} · sd · √2 / √2
    assert t_interval([5.0]) == (5.0, None, 1)
    assert t_interval([float("nan")]) == (None, None, 0)


def test_paired_pvalues_are_wilcoxon_on_the_images_both_rows_scored() -> None:
    rng = np.random.default_rng(0)
    best = rng.normal(25, 2, size=12)
    others = np.vstack([best - rng.uniform(0.1, 1, size=12), best + rng.normal(0, 0.5, size=12), best])
    others[1, 3] = np.nan  # this image failed for that row: left out of that comparison only
    p = paired_pvalues(best, others)
    assert p[0] == pytest.approx(st.wilcoxon(others[0] - best).pvalue) == pytest.approx(2 / 2**12)
    keep = np.isfinite(others[1])
    assert p[1] == pytest.approx(st.wilcoxon(others[1][keep] - best[keep]).pvalue)
    assert p[2] == 1.0  # identical on every image
    assert np.isnan(paired_pvalues(best[:1], others[:, :1])).all()  # one pair: no test


def test_holm_step_down() -> None:
    adjusted = holm([0.01, 0.04, float("nan"), 0.03])
    # sorted 0.01, 0.03, 0.04 times 3, 2, 1 -> 0.03, 0.06, 0.04 -> monotone 0.03, 0.06, 0.06
    assert adjusted[0] == pytest.approx(0.03) and adjusted[3] == pytest.approx(0.06)
    assert adjusted[1] == pytest.approx(0.06) and np.isnan(adjusted[2])
    assert holm([0.9, 0.8]).tolist() == [pytest.approx(1.0), pytest.approx(1.0)]


def test_seed_sd() -> None:
    assert seed_sd([24.0, 24.1, 24.2]) == pytest.approx(0.1)
    assert seed_sd([24.0]) is None


def test_rows_tested_together_get_what_testing_each_alone_gives() -> None:
    """scipy chooses exact / permutation / normal approximation from ties and zeros in the whole array it is
    given; rows of many tables tested in one call must each get their own test's p-value."""
    from srbench.stats import wilcoxon_rows

    rng = np.random.default_rng(1)
    clean = rng.normal(0.3, 1.0, size=(3, 20))  # no ties: exact
    tied = np.round(rng.normal(0.3, 1.0, size=(2, 20)), 1)  # ties: normal approximation for n = 20
    tied[1, 0] = 0.0  # and a zero
    holes = rng.normal(0.3, 1.0, size=(1, 20))
    holes[0, 5] = np.nan
    diff = np.vstack([clean, tied, holes])
    together = wilcoxon_rows(diff)
    alone = [st.wilcoxon(row[np.isfinite(row)]).pvalue for row in diff]
    np.testing.assert_allclose(together, alone, rtol=1e-12)
