"""Step analysis: windows, p99, and every verdict the analysis can give."""

from __future__ import annotations

import re

import numpy as np
import pytest

from rayfront.canary.analysis import VersionWindow, WindowBook, analyze, nearest_rank
from rayfront.canary.compare import ShadowStats, compare_outputs
from rayfront.canary.state import RolloutPlan, WindowSummary

PLAN = RolloutPlan(
    canary_version="2",
    stable_version="1",
    steps=[5, 25, 50, 100],
    interval_s=30,
    max_error_rate=0.01,
    max_p99_ratio=1.2,
    min_agreement=0.98,
    min_requests=100,
    min_shadow_samples=20,
)

STABLE = WindowSummary(requests=2_000, errors=2, p99_s=0.010)
GOOD = WindowSummary(requests=200, errors=0, p99_s=0.011)


def _shadow(agree: int, total: int) -> ShadowStats:
    stats = ShadowStats()
    logits = np.eye(2)[np.zeros(total, dtype=int)]
    flipped = logits.copy()
    flipped[agree:] = np.eye(2)[1]
    stats.add(compare_outputs({"logits": logits}, {"logits": flipped}))
    return stats


def test_nearest_rank_gives_99th_value_when_100_samples():
    assert nearest_rank([float(i) for i in range(1, 101)], 0.99) == 99.0
    assert nearest_rank([5.0], 0.99) == 5.0
    with pytest.raises(ValueError, match="empty"):
        nearest_rank([], 0.99)


def test_version_window_reports_counts_and_p99_when_fed_requests():
    win = VersionWindow()
    for i in range(1, 101):
        win.record(ok=i % 10 != 0, latency_s=i / 1000)
    s = win.summary()
    assert (s.requests, s.errors) == (100, 10)
    assert s.error_rate == pytest.approx(0.1)
    assert s.p99_s == pytest.approx(0.099)
    win.reset()
    assert win.summary() == WindowSummary(requests=0, errors=0, p99_s=None)


def test_version_window_stays_bounded_and_deterministic_when_over_capacity():
    def fill() -> VersionWindow:
        w = VersionWindow(capacity=64, seed=3)
        for i in range(10_000):
            w.record(True, (i % 1000) / 1000)
        return w

    a, b = fill(), fill()
    assert len(a._samples) == 64
    assert a.p99() == b.p99()
    assert a.summary().requests == 10_000


def test_window_book_resets_only_the_given_model_when_step_changes():
    book = WindowBook()
    book.record("a", "1", True, 0.01)
    book.record("b", "1", True, 0.01)
    book.reset("a")
    assert book.summary("a", "1").requests == 0
    assert book.summary("b", "1").requests == 1
    assert book.versions("b") == ["1"]


def test_analyze_advances_when_every_check_passes():
    verdict = analyze(STABLE, GOOD, _shadow(100, 100), PLAN)
    assert verdict.action == "advance"
    assert "all checks passed" in verdict.reason
    assert verdict.comparison["p99_ratio"] == pytest.approx(1.1)
    assert [c["metric"] for c in verdict.comparison["checks"]] == [
        "error_rate",
        "p99_ratio",
        "agreement",
    ]


def test_analyze_rolls_back_when_error_rate_too_high():
    bad = WindowSummary(requests=200, errors=10, p99_s=0.010)
    verdict = analyze(STABLE, bad, _shadow(100, 100), PLAN)
    assert verdict.action == "rollback"
    assert verdict.reason == (
        "canary error rate 5.00% > max_error_rate 1.00% (10/200), 4.90% above stable "
        "(95% CI 2.62%..8.86%, p=1.47e-19 < alpha 0.05)"
    )


def test_analyze_rolls_back_when_p99_ratio_too_high():
    slow = WindowSummary(requests=200, errors=0, p99_s=0.015)
    verdict = analyze(STABLE, slow, _shadow(100, 100), PLAN)
    assert verdict.action == "rollback"
    assert "canary p99 15.00 ms is 1.50x stable p99 10.00 ms > max_p99_ratio 1.2" in verdict.reason


def test_analyze_rolls_back_when_agreement_too_low():
    verdict = analyze(STABLE, GOOD, _shadow(90, 100), PLAN)
    assert verdict.action == "rollback"
    assert verdict.reason == "output agreement 90.00% < min_agreement 98.00% over 100 mirrored rows"


def test_analyze_names_every_failure_when_several_checks_fail():
    bad = WindowSummary(requests=200, errors=10, p99_s=0.050)
    verdict = analyze(STABLE, bad, _shadow(10, 100), PLAN)
    assert verdict.action == "rollback"
    assert verdict.reason.count(";") == 2


def test_analyze_pauses_when_canary_has_too_few_requests():
    verdict = analyze(STABLE, WindowSummary(requests=40, errors=0, p99_s=0.01), None, PLAN)
    assert verdict.action == "pause"
    assert verdict.reason == "insufficient data: canary requests 40 < min_requests 100"


def test_analyze_rolls_back_early_when_error_budget_already_exhausted():
    verdict = analyze(STABLE, WindowSummary(requests=40, errors=2, p99_s=0.01), None, PLAN)
    assert verdict.action == "rollback"
    assert verdict.reason.startswith("canary error budget exhausted: 2 errors in 40 requests")


def test_analyze_pauses_when_mirrored_rows_are_too_few():
    verdict = analyze(STABLE, GOOD, _shadow(5, 5), PLAN)
    assert verdict.action == "pause"
    assert verdict.reason == "insufficient data: mirrored rows 5 < min_shadow_samples 20"


def test_analyze_uses_stable_baseline_when_stable_gets_no_traffic():
    empty = WindowSummary(requests=0, errors=0, p99_s=None)
    verdict = analyze(empty, GOOD, None, PLAN, stable_baseline=STABLE, mirror_possible=False)
    assert verdict.action == "advance"
    assert verdict.comparison["stable_source"] == "baseline"
    assert "not checked" in verdict.comparison["agreement_note"]


def test_analyze_pauses_when_stable_has_no_data_and_no_baseline():
    empty = WindowSummary(requests=3, errors=0, p99_s=0.01)
    verdict = analyze(empty, GOOD, _shadow(100, 100), PLAN)
    assert verdict.action == "pause"
    assert "stable requests 3 < min_requests 100" in verdict.reason


def test_analyze_is_deterministic_when_given_same_inputs():
    a = analyze(STABLE, GOOD, _shadow(99, 100), PLAN)
    b = analyze(STABLE, GOOD, _shadow(99, 100), PLAN)
    assert a == b


def test_merged_summary_weights_each_process_by_its_requests():
    from rayfront.canary.analysis import VersionWindow, merged_summary

    busy, idle = VersionWindow(capacity=100, seed=1), VersionWindow(capacity=100, seed=2)
    for _ in range(10_000):
        busy.record(True, 0.010)  # 10,000 fast requests, 100 samples kept
    for _ in range(50):
        idle.record(False, 1.0)  # 50 slow failures, all kept
    merged = merged_summary([busy.export(), idle.export()])
    assert (merged.requests, merged.errors) == (10_050, 50)
    # 50 of 10,050 requests (0.5%) were slow: the p99 is the fast one. Pooling the
    # samples unweighted (50 of 150 slow) would have said 1 s.
    assert merged.p99_s == pytest.approx(0.010)
    for _ in range(200):
        idle.record(False, 1.0)  # now 2.4% slow
    assert merged_summary([busy.export(), idle.export()]).p99_s == pytest.approx(1.0)


# --- significance, not raw ratios ----------------------------------------------------------


def _latencies(median_s: float, n: int, seed: int, tail: float = 0.0) -> list[float]:
    rng = np.random.default_rng(seed)
    samples = rng.lognormal(np.log(median_s), 0.25, size=n)
    if tail:  # a few stalled requests (a loaded host), not a slower model
        samples[: max(1, n // 50)] *= tail
    return samples.tolist()


def _summary(requests: int, errors: int, samples: list[float]) -> WindowSummary:
    from rayfront.canary.analysis import nearest_rank

    return WindowSummary(
        requests=requests,
        errors=errors,
        p99_s=nearest_rank(sorted(samples), 0.99),
        samples=samples,
    )


def test_analyze_advances_identical_canary_when_only_its_tail_is_noisier():
    stable = _summary(2000, 0, _latencies(0.020, 1000, seed=1))
    canary = _summary(200, 0, _latencies(0.020, 200, seed=2, tail=3.0))
    assert canary.p99_s / stable.p99_s > 1.2  # the raw ratio alone would roll it back
    verdict = analyze(stable, canary, _shadow(100, 100), PLAN)
    assert verdict.action == "advance", verdict.reason
    latency = next(c for c in verdict.comparison["checks"] if c["metric"] == "p99_ratio")
    assert latency["passed"] and latency["test"]["p_value"] > 0.05


def test_analyze_rolls_back_slower_canary_when_ranks_and_median_agree():
    stable = _summary(2000, 0, _latencies(0.020, 1000, seed=1))
    slower = _summary(200, 0, _latencies(0.030, 200, seed=2))
    verdict = analyze(stable, slower, _shadow(100, 100), PLAN)
    assert verdict.action == "rollback"
    assert re.search(
        r"median \+\d+\.\d+ ms \(floor 5 ms\), Mann-Whitney p=\S+ \(alpha 0\.05\)", verdict.reason
    )


def test_analyze_advances_when_canary_is_significantly_but_trivially_slower():
    # 1 ms slower at the median on a 2 ms model: real, significant, and not worth a rollback.
    stable = _summary(2000, 0, _latencies(0.002, 1000, seed=1))
    canary = _summary(2000, 0, _latencies(0.003, 1000, seed=2))
    verdict = analyze(stable, canary, _shadow(100, 100), PLAN)
    latency = next(c for c in verdict.comparison["checks"] if c["metric"] == "p99_ratio")
    assert latency["test"]["p_value"] < 0.05
    assert verdict.action == "advance", verdict.reason


def test_analyze_advances_when_canary_errors_match_an_equally_failing_stable():
    # Both 3% (bad client input, say): above max_error_rate, but not the canary's doing.
    stable = WindowSummary(requests=2000, errors=60, p99_s=0.010)
    canary = WindowSummary(requests=200, errors=6, p99_s=0.010)
    verdict = analyze(stable, canary, _shadow(100, 100), PLAN)
    errors = next(c for c in verdict.comparison["checks"] if c["metric"] == "error_rate")
    assert errors["passed"] and errors["test"]["p_value"] > 0.05
    lo, hi = errors["test"]["ci95"]
    assert lo < 0 < hi
    assert verdict.action == "advance"
