"""Canary rollouts: weighted and sticky version routing, shadow traffic, progressive delivery.

Ray-free and transport-agnostic: the gateway owns one :class:`CanaryManager`, asks it for
a :class:`Router` per request, feeds it request outcomes and mirrored answers, and mounts
:func:`canary_routes` on its HTTP app. ``rayfront canary`` (:mod:`rayfront.canary.cli`)
drives those routes.

This package does not import the CLI (Typer) or start anything at import time.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> defining module. Loaded on first use (PEP 562) so that importing the CLI
# (`rayfront --help`) does not pull numpy, pydantic and prometheus_client.
_EXPORTS: dict[str, str] = {
    "Verdict": "analysis",
    "VersionWindow": "analysis",
    "WindowBook": "analysis",
    "analyze": "analysis",
    "canary_routes": "api",
    "dispatch": "api",
    "Comparison": "compare",
    "ShadowStats": "compare",
    "compare_outputs": "compare",
    "CanaryManager": "controller",
    "BUCKETS": "router",
    "Router": "router",
    "key_bucket": "router",
    "pick_version": "router",
    "should_shadow": "router",
    "signature_diff": "signature",
    "Decision": "state",
    "ModelTraffic": "state",
    "Retirement": "state",
    "RolloutPlan": "state",
    "RolloutState": "state",
    "TrafficPolicy": "state",
    "WindowSummary": "state",
    "CanaryStore": "store",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rayfront.canary' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"rayfront.canary.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "BUCKETS",
    "CanaryManager",
    "CanaryStore",
    "Comparison",
    "Decision",
    "ModelTraffic",
    "Retirement",
    "RolloutPlan",
    "RolloutState",
    "Router",
    "ShadowStats",
    "TrafficPolicy",
    "Verdict",
    "VersionWindow",
    "WindowBook",
    "WindowSummary",
    "analyze",
    "canary_routes",
    "compare_outputs",
    "dispatch",
    "key_bucket",
    "pick_version",
    "should_shadow",
    "signature_diff",
]
