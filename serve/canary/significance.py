"""Significance tests for rollout gates: a canary is judged worse only on evidence.

A step's canary and stable windows see different traffic (the canary gets a smaller share
and the mirrored copies, so its batches fill and wait differently) and both carry the
noise of a shared host. A raw ratio of two p99s rolls an identical model back; these tests
ask whether the difference is larger than chance:

* :func:`two_proportion`: errors, a one-sided two-proportion z-test (is the canary's error
  rate higher?) with a Newcombe-Wilson 95% interval of the difference;
* :func:`mann_whitney`: latencies, a one-sided Mann-Whitney U test with tie correction
  (are the canary's latencies stochastically larger?), with both medians, which the
  latency gate also compares against an absolute floor.

Pure numpy and math (normal approximations: the gates only run with ``min_requests``
samples, the power floor, so the approximations hold).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Two-sided 95% normal quantile.
Z95 = 1.959963984540054


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def wilson(errors: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion."""
    if n <= 0:
        return (0.0, 1.0)
    p = errors / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class ProportionTest:
    """Canary vs stable error rates."""

    difference: float  # canary rate - stable rate
    ci_low: float
    ci_high: float
    p_value: float  # one-sided: canary rate > stable rate

    def to_dict(self) -> dict[str, float]:
        return {
            "difference": self.difference,
            "ci95": [self.ci_low, self.ci_high],
            "p_value": self.p_value,
        }


def two_proportion(
    canary_errors: int, canary_n: int, stable_errors: int, stable_n: int
) -> ProportionTest:
    """One-sided pooled z-test and Newcombe's hybrid score interval of the difference."""
    if canary_n <= 0 or stable_n <= 0:
        raise ValueError("both windows need requests")
    p1, p2 = canary_errors / canary_n, stable_errors / stable_n
    pooled = (canary_errors + stable_errors) / (canary_n + stable_n)
    se = math.sqrt(pooled * (1 - pooled) * (1 / canary_n + 1 / stable_n))
    p_value = (0.0 if p1 > p2 else 1.0) if se == 0.0 else normal_sf((p1 - p2) / se)
    l1, u1 = wilson(canary_errors, canary_n)
    l2, u2 = wilson(stable_errors, stable_n)
    diff = p1 - p2
    low = diff - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = diff + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return ProportionTest(diff, low, high, p_value)


@dataclass(frozen=True)
class RankTest:
    """Canary vs stable latencies."""

    p_value: float  # one-sided: canary latencies stochastically larger
    canary_median_s: float
    stable_median_s: float
    probability_greater: float  # P(canary > stable) + P(tie)/2, the common-language effect

    @property
    def slower_ms(self) -> float:
        """Canary median minus stable median, in milliseconds."""
        return (self.canary_median_s - self.stable_median_s) * 1000

    def slower(self, alpha: float, floor_ms: float) -> bool:
        """The latency rule of every gate: slower as a whole (significantly, by rank) *and*
        by more than ``floor_ms`` at the median; a noisier tail alone is not slower."""
        return self.p_value < alpha and self.slower_ms > floor_ms

    def to_dict(self) -> dict[str, float]:
        return {
            "p_value": self.p_value,
            "canary_median_s": self.canary_median_s,
            "stable_median_s": self.stable_median_s,
            "p_canary_slower": self.probability_greater,
        }


def mann_whitney(canary: Sequence[float], stable: Sequence[float]) -> RankTest:
    """One-sided Mann-Whitney U (normal approximation, tie-corrected, continuity-corrected)."""
    x = np.asarray(canary, dtype=np.float64)
    y = np.asarray(stable, dtype=np.float64)
    n1, n2 = x.size, y.size
    if n1 == 0 or n2 == 0:
        raise ValueError("both windows need latency samples")
    both = np.concatenate([x, y])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(both.size, dtype=np.float64)
    sorted_vals = both[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_vals, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    u1 = float(ranks[:n1].sum() - n1 * (n1 + 1) / 2.0)
    mean = n1 * n2 / 2.0
    n = n1 + n2
    tie_term = (
        float(np.sum(counts.astype(np.float64) ** 3 - counts)) / (n * (n - 1)) if n > 1 else 0
    )
    var = n1 * n2 / 12.0 * ((n + 1) - tie_term)
    if var <= 0:
        p_value = 1.0
    else:
        z = (u1 - mean - 0.5) / math.sqrt(var)
        p_value = normal_sf(z)
    return RankTest(
        p_value=p_value,
        canary_median_s=float(np.median(x)),
        stable_median_s=float(np.median(y)),
        probability_greater=u1 / (n1 * n2),
    )
