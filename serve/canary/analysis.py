"""Per-version request windows and the pure step verdict of a progressive rollout.

The gateway feeds every finished execution into a :class:`VersionWindow` (success or
failure, latency in seconds), mirrored executions included: they run on the canary and
say as much about it as routed ones. At the end of a step the controller summarises the
windows and calls :func:`analyze`, which is a pure function of its inputs:

1. canary requests below ``min_requests`` -> **pause** ("insufficient data: ..."; the
   controller first lets the step collect for ``data_patience_intervals`` more intervals), unless
   the canary already has more errors than ``max_error_rate * min_requests`` allows: it
   would fail the step even had it reached ``min_requests`` with no further error, and
   pausing would leave it serving its share, so -> **rollback** at once;
2. no stable data to compare with (neither this window nor a saved baseline has
   ``min_requests``) -> **pause**;
3. canary error rate above ``max_error_rate`` *and* significantly above the stable's
   (one-sided two-proportion z-test at ``alpha``), or canary/stable p99 above
   ``max_p99_ratio`` *and* canary latencies significantly larger (one-sided Mann-Whitney U
   at ``alpha``) with a median more than ``latency_floor_ms`` above the stable's ->
   **rollback** (every failing check is named, with its interval and p-value);
4. agreement checked (``min_agreement > 0``) and mirroring possible: fewer than
   ``min_shadow_samples`` mirrored rows -> **pause**; agreement below ``min_agreement``
   -> **rollback**;
5. otherwise -> **advance**.

p99 is the nearest-rank percentile of a bounded uniform reservoir (Vitter's algorithm R,
seeded, so a window fed the same sequence always reports the same p99).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Literal

from rayfront.canary.compare import ShadowStats
from rayfront.canary.significance import mann_whitney, two_proportion
from rayfront.canary.state import RolloutPlan, WindowSummary

VerdictAction = Literal["advance", "rollback", "pause"]

DEFAULT_RESERVOIR = 4096
#: Latency samples a process publishes per window for the cross-process p99.
EXPORT_SAMPLES = 1024
# Latencies below this are treated as equal to it when forming the p99 ratio, so an
# idle stable with a near-zero p99 cannot make every canary look infinitely slow.
_P99_FLOOR_S = 1e-6


def nearest_rank(sorted_values: list[float], q: float) -> float:
    """The ``q`` quantile (0 < q <= 1) of ascending ``sorted_values`` by nearest rank."""
    if not sorted_values:
        raise ValueError("nearest_rank of an empty list")
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


class VersionWindow:
    """Counts and a latency reservoir for one (model, version) since the last reset."""

    __slots__ = ("_capacity", "_rng", "_samples", "errors", "requests")

    def __init__(self, capacity: int = DEFAULT_RESERVOIR, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"reservoir capacity must be >= 1, got {capacity}")
        self._capacity = capacity
        self._rng = random.Random(seed)
        self._samples: list[float] = []
        self.requests = 0
        self.errors = 0

    def record(self, ok: bool, latency_s: float) -> None:
        """Count one finished request (hot path: O(1), no allocation once full)."""
        self.requests += 1
        if not ok:
            self.errors += 1
        if len(self._samples) < self._capacity:
            self._samples.append(latency_s)
        else:
            j = self._rng.randrange(self.requests)
            if j < self._capacity:
                self._samples[j] = latency_s

    def p99(self) -> float | None:
        return nearest_rank(sorted(self._samples), 0.99) if self._samples else None

    def summary(self) -> WindowSummary:
        samples = self._samples
        if len(samples) > EXPORT_SAMPLES:
            samples = random.Random(self.requests).sample(samples, EXPORT_SAMPLES)
        return WindowSummary(
            requests=self.requests, errors=self.errors, p99_s=self.p99(), samples=list(samples)
        )

    def reset(self) -> None:
        self._samples = []
        self.requests = 0
        self.errors = 0

    def export(self, max_samples: int = EXPORT_SAMPLES) -> dict[str, Any]:
        """This window as JSON, for the process that judges a rollout over every ingress.

        At most ``max_samples`` latencies, drawn uniformly from the reservoir: still a
        uniform sample of the requests, and a small message each second.
        """
        samples = self._samples
        if len(samples) > max_samples:
            samples = self._rng.sample(samples, max_samples)
        return {"requests": self.requests, "errors": self.errors, "samples": list(samples)}


def merged_summary(parts: list[dict[str, Any]]) -> WindowSummary:
    """One summary of windows kept by several processes (see :meth:`VersionWindow.export`).

    Each reservoir is a uniform sample of its own process's requests, so a sample stands
    for ``requests / len(samples)`` requests and the p99 is taken over those weights: a
    busy process counts for more than an idle one.
    """
    requests = sum(int(p.get("requests", 0)) for p in parts)
    errors = sum(int(p.get("errors", 0)) for p in parts)
    weighted: list[tuple[float, float]] = []
    for p in parts:
        samples = [float(x) for x in p.get("samples", ())]
        if samples:
            weight = int(p.get("requests", 0)) / len(samples)
            weighted += [(x, weight) for x in samples]
    p99: float | None = None
    if weighted:
        weighted.sort()
        total = sum(w for _, w in weighted)
        target, seen = 0.99 * total, 0.0
        for x, w in weighted:
            seen += w
            p99 = x
            if seen >= target - 1e-9:
                break
    pooled = [float(x) for p in parts for x in p.get("samples", ())]
    if len(pooled) > EXPORT_SAMPLES:
        pooled = random.Random(requests).sample(pooled, EXPORT_SAMPLES)
    return WindowSummary(requests=requests, errors=errors, p99_s=p99, samples=pooled)


class WindowBook:
    """All windows of a process, keyed by (model, version)."""

    def __init__(self, capacity: int = DEFAULT_RESERVOIR) -> None:
        self._capacity = capacity
        self._windows: dict[tuple[str, str], VersionWindow] = {}

    def window(self, model: str, version: str) -> VersionWindow:
        key = (model, version)
        win = self._windows.get(key)
        if win is None:
            win = self._windows[key] = VersionWindow(self._capacity)
        return win

    def record(self, model: str, version: str, ok: bool, latency_s: float) -> None:
        self.window(model, version).record(ok, latency_s)

    def summary(self, model: str, version: str) -> WindowSummary:
        return self.window(model, version).summary()

    def reset(self, model: str) -> None:
        """Start new windows for every version of ``model`` (a new rollout step)."""
        for (m, _), win in self._windows.items():
            if m == model:
                win.reset()

    def versions(self, model: str) -> list[str]:
        return sorted((v for m, v in self._windows if m == model), key=int)


@dataclass(frozen=True)
class Verdict:
    """What to do with the current step, why, and the numbers behind it."""

    action: VerdictAction
    reason: str
    comparison: dict[str, Any] = field(default_factory=dict)
    #: A pause for want of data: the step may keep collecting before it really pauses.
    inconclusive: bool = False


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.2f}%"


def analyze(
    stable: WindowSummary | VersionWindow,
    canary: WindowSummary | VersionWindow,
    shadow: ShadowStats | None,
    plan: RolloutPlan,
    *,
    stable_baseline: WindowSummary | None = None,
    mirror_possible: bool = True,
) -> Verdict:
    """Judge one rollout step; pure and deterministic given its inputs.

    ``stable_baseline`` stands in for the stable window when the stable served too few
    requests in this step (at 100% it serves none). ``mirror_possible`` is False when no
    traffic reaches the stable to mirror from; the agreement check is then skipped and said so.
    """
    s = stable.summary() if isinstance(stable, VersionWindow) else stable
    c = canary.summary() if isinstance(canary, VersionWindow) else canary
    cmp: dict[str, Any] = {
        "canary_requests": c.requests,
        "canary_errors": c.errors,
        "canary_error_rate": c.error_rate,
        "canary_p99_s": c.p99_s,
        "stable_requests": s.requests,
        "stable_errors": s.errors,
        "stable_error_rate": s.error_rate,
        "stable_p99_s": s.p99_s,
        "min_requests": plan.min_requests,
    }
    if shadow is not None:
        cmp["shadow"] = shadow.to_dict()
        cmp["agreement"] = shadow.agreement

    # 1. Enough canary data?
    if c.requests < plan.min_requests:
        budget = plan.max_error_rate * plan.min_requests
        if c.errors > budget:
            return Verdict(
                "rollback",
                f"canary error budget exhausted: {c.errors} errors in {c.requests} requests "
                f"already exceed max_error_rate {_pct(plan.max_error_rate)} of min_requests "
                f"{plan.min_requests}",
                cmp,
            )
        return Verdict(
            "pause",
            f"insufficient data: canary requests {c.requests} < min_requests {plan.min_requests}",
            cmp,
            inconclusive=True,
        )

    # 2. Something to compare with?
    base = s
    cmp["stable_source"] = "window"
    if s.requests < plan.min_requests:
        if stable_baseline is None or stable_baseline.requests < plan.min_requests:
            return Verdict(
                "pause",
                f"insufficient data: stable requests {s.requests} < min_requests "
                f"{plan.min_requests} and no stable baseline from an earlier step",
                cmp,
                inconclusive=True,
            )
        base = stable_baseline
        cmp["stable_source"] = "baseline"
        cmp["stable_baseline"] = stable_baseline.model_dump(exclude={"samples"})

    # 3. Error rate and latency: worse only when significantly so (see canary.significance).
    checks: list[dict[str, Any]] = []
    failures: list[str] = []
    error_rate = c.error_rate or 0.0
    errors_test = two_proportion(c.errors, c.requests, base.errors, base.requests)
    ok = error_rate <= plan.max_error_rate or errors_test.p_value >= plan.alpha
    checks.append(
        {
            "metric": "error_rate",
            "value": error_rate,
            "threshold": plan.max_error_rate,
            "test": errors_test.to_dict(),
            "passed": ok,
        }
    )
    if not ok:
        failures.append(
            f"canary error rate {_pct(error_rate)} > max_error_rate {_pct(plan.max_error_rate)} "
            f"({c.errors}/{c.requests}), {_pct(errors_test.difference)} above stable "
            f"(95% CI {_pct(errors_test.ci_low)}..{_pct(errors_test.ci_high)}, "
            f"p={errors_test.p_value:.3g} < alpha {plan.alpha:g})"
        )

    c99 = c.p99_s or 0.0
    s99 = max(base.p99_s or 0.0, _P99_FLOOR_S)
    ratio = max(c99, _P99_FLOOR_S) / s99
    cmp["p99_ratio"] = _finite(ratio)
    latency: dict[str, Any] = {"metric": "p99_ratio", "value": _finite(ratio)}
    latency["threshold"] = plan.max_p99_ratio
    ok = ratio <= plan.max_p99_ratio
    why = f"canary p99 {c99 * 1000:.2f} ms is {ratio:.2f}x stable p99 {s99 * 1000:.2f} ms"
    if not ok and c.samples and base.samples:
        rank = mann_whitney(c.samples, base.samples)
        latency["test"] = rank.to_dict()
        # A ratio of tails alone is noise (see RankTest.slower).
        ok = not rank.slower(plan.alpha, plan.latency_floor_ms)
        why += (
            f", median +{rank.slower_ms:.2f} ms (floor {plan.latency_floor_ms:g} ms), "
            f"Mann-Whitney p={rank.p_value:.3g} (alpha {plan.alpha:g})"
        )
    elif not ok:
        latency["note"] = "no latency samples to test: ratio only"
    latency["passed"] = ok
    checks.append(latency)
    if not ok:
        failures.append(f"{why} > max_p99_ratio {plan.max_p99_ratio:g}")

    # 4. Output agreement on mirrored traffic.
    agreement_pending: str | None = None
    if plan.min_agreement > 0:
        if not mirror_possible:
            cmp["agreement_note"] = "not checked: no traffic reaches the stable to mirror from"
        else:
            rows = shadow.rows if shadow is not None else 0
            agreement = shadow.agreement if shadow is not None else None
            if rows < plan.min_shadow_samples or agreement is None:
                agreement_pending = (
                    f"insufficient data: mirrored rows {rows} < min_shadow_samples "
                    f"{plan.min_shadow_samples}"
                )
            else:
                ok = agreement >= plan.min_agreement
                checks.append(
                    {
                        "metric": "agreement",
                        "value": agreement,
                        "threshold": plan.min_agreement,
                        "passed": ok,
                    }
                )
                if not ok:
                    failures.append(
                        f"output agreement {_pct(agreement)} < min_agreement "
                        f"{_pct(plan.min_agreement)} over {rows} mirrored rows"
                    )
    cmp["checks"] = checks

    if failures:
        return Verdict("rollback", "; ".join(failures), cmp)
    if agreement_pending is not None:
        return Verdict("pause", agreement_pending, cmp, inconclusive=True)
    passed = ", ".join(f"{ch['metric']} ok" for ch in checks)
    return Verdict("advance", f"all checks passed ({passed})", cmp)
