"""Serve autoscaling policy for model versions fed by the fast path.

Serve's default policy scales on "ongoing requests" counted by deployment handles. With
the fast path (:mod:`rayfront.transport.frames`) the gateway sends batches over its own sockets,
so handles see next to nothing and the default policy would scale a busy version down.
Each ModelVersion replica instead reports the batches it has in flight on both paths
(``record_autoscaling_stats``), and :func:`inflight_policy` scales on that against the
deployment's ``target_ongoing_requests``, exactly as the default policy does on its count.

Bounds and delays: Ray Serve 2.60 wraps every custom deployment policy with its own
``_apply_autoscaling_config`` (``ray/serve/autoscaling_policy.py``), which applies
``upscale_delay_s``/``downscale_delay_s`` (timestamps kept in ``policy_state``), the
up/downscaling factors, the cold-start path from zero, and the min/max bounds. Applying the
delays here too would double them, so this function only decides the desired count and
clamps it to ``capacity_adjusted_min/max_replicas``; the unit tests run it through Serve's
wrapper to check the delays hold end to end.

The module is cloudpickled by value into the Serve controller (Serve does that for custom
policies), so it imports nothing from rayfront.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ray.serve.config import AutoscalingContext

#: Import path for ``autoscaling_config.policy.policy_function``.
POLICY_PATH = "rayfront.deploy.autoscaling:inflight_policy"
#: The custom metric each replica reports: time-averaged batches in flight (both paths).
METRIC_INFLIGHT = "inflight_batches"
#: Peak batches in flight over the same interval (reported for dashboards and debugging).
METRIC_INFLIGHT_PEAK = "inflight_batches_peak"
#: Key in policy_state holding the load the last decision saw (for logs and tests).
STATE_LOAD = "rayfront_inflight_load"


def observed_load(ctx: AutoscalingContext) -> float:
    """Batches in flight across the deployment's replicas.

    The replicas' in-flight metric (averaged by Serve over ``look_back_period_s``) covers
    both paths; handle calls are in it too, so taking the larger of it and Serve's own
    handle count never double-counts, and still sees load before the first reports
    arrive (a replica that just started has reported nothing yet).
    """
    metrics = ctx.aggregated_metrics or {}
    per_replica = metrics.get(METRIC_INFLIGHT) or {}
    reported = float(sum(v for v in per_replica.values() if v is not None and v == v))
    handles = ctx.total_num_requests or 0.0
    return max(reported, float(handles))


def inflight_policy(ctx: AutoscalingContext) -> tuple[float, dict[str, Any]]:
    """Desired replicas = batches in flight / ``target_ongoing_requests``, within bounds.

    Returns ``(desired replicas, policy_state)``; Serve rounds up, applies the delays and
    the bounds (see the module docstring).
    """
    state = dict(ctx.policy_state or {})
    low = ctx.capacity_adjusted_min_replicas
    high = ctx.capacity_adjusted_max_replicas
    if ctx.current_num_replicas == 0:
        # Nothing reports; Serve's wrapper starts replicas when handles queue requests.
        return max(low, min(high, ctx.target_num_replicas)), state
    target = float(ctx.config.target_ongoing_requests) if ctx.config is not None else 1.0
    if not target > 0 or math.isinf(target):
        target = 1.0
    load = observed_load(ctx)
    state[STATE_LOAD] = load
    desired = load / target
    return max(float(low), min(float(high), desired)), state
