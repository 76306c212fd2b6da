"""Prometheus export of canary state, on an explicit registry (no process-global metrics).

* ``rayfront_canary_weight{model,version}``: traffic weight in force (percent);
* ``rayfront_canary_rollbacks_total{model}``: automatic rollbacks;
* ``rayfront_canary_decisions_total{model,action}``: every rollout decision;
* ``rayfront_canary_analysis{model,metric}``: the latest step analysis (error rates, p99s
  in seconds, p99 ratio, agreement, request counts, step index).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

# Analysis numbers exported as gauges (comparison dict key -> metric label).
_ANALYSIS_KEYS = (
    "canary_error_rate",
    "stable_error_rate",
    "canary_p99_s",
    "stable_p99_s",
    "p99_ratio",
    "agreement",
    "canary_requests",
    "stable_requests",
)


class CanaryMetrics:
    """The canary gauges and counters, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.weight = Gauge(
            "rayfront_canary_weight",
            "Traffic weight (percent of unpinned requests) per model version.",
            ["model", "version"],
            registry=registry,
        )
        self.rollbacks = Counter(
            "rayfront_canary_rollbacks",
            "Automatic canary rollbacks per model.",
            ["model"],
            registry=registry,
        )
        self.decisions = Counter(
            "rayfront_canary_decisions",
            "Canary rollout decisions per model and action.",
            ["model", "action"],
            registry=registry,
        )
        self.analysis = Gauge(
            "rayfront_canary_analysis",
            "Latest canary step analysis per model and metric.",
            ["model", "metric"],
            registry=registry,
        )
        self._versions: dict[str, set[str]] = {}

    def set_weights(self, model: str, weights: Mapping[str, int]) -> None:
        for gone in self._versions.get(model, set()) - weights.keys():
            self.weight.remove(model, gone)
        for version, w in weights.items():
            self.weight.labels(model, version).set(w)
        self._versions[model] = set(weights)

    def decision(self, model: str, action: str, comparison: Mapping[str, Any], step: int) -> None:
        self.decisions.labels(model, action).inc()
        if action == "rollback":
            self.rollbacks.labels(model).inc()
        self.analysis.labels(model, "step").set(step)
        for key in _ANALYSIS_KEYS:
            value = comparison.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.analysis.labels(model, key).set(value)
