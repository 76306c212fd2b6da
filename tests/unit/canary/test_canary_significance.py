"""Two-proportion and Mann-Whitney tests against known values (scipy's where it is installed)."""

from __future__ import annotations

import numpy as np
import pytest

from rayfront.canary.significance import mann_whitney, two_proportion, wilson


def test_two_proportion_finds_a_real_difference_and_not_an_equal_one():
    worse = two_proportion(20, 200, 10, 2000)
    assert worse.p_value < 1e-6 and worse.ci_low > 0
    same = two_proportion(2, 200, 20, 2000)
    assert same.p_value > 0.3 and same.ci_low < 0 < same.ci_high
    assert two_proportion(0, 100, 0, 100).p_value == 1.0


def test_wilson_interval_brackets_the_rate_when_errors_are_zero():
    lo, hi = wilson(0, 300)
    assert lo == pytest.approx(0.0, abs=1e-12) and 0.009 < hi < 0.014  # about the rule of three


def test_mann_whitney_matches_scipy_when_samples_tie_and_differ():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x = np.round(rng.normal(10.5, 2, 150), 0)  # rounded: many ties
    y = np.round(rng.normal(10.0, 2, 300), 0)
    ours = mann_whitney(x, y)
    ref = stats.mannwhitneyu(x, y, alternative="greater", use_continuity=True, method="asymptotic")
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-6)
    assert ours.probability_greater == pytest.approx(ref.statistic / (150 * 300))


def test_mann_whitney_is_not_significant_when_samples_share_a_distribution():
    rng = np.random.default_rng(1)
    res = mann_whitney(rng.exponential(1, 400), rng.exponential(1, 400))
    assert res.p_value > 0.05


def test_mann_whitney_refuses_empty_windows():
    with pytest.raises(ValueError, match="both windows need latency samples"):
        mann_whitney([], [1.0])
