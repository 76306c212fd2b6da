"""Serve autoscaling policy for model versions: scale on the queue, where batching lives.

Requests reach a replica over rayfront's transport, not Serve handles, so Serve's own
"ongoing requests" count sees almost nothing. Each ModelVersion replica instead reports
its engine's load every metrics interval (``record_autoscaling_stats``):

* ``inflight``: batches executing, time-averaged;
* ``queued``: requests waiting in the batcher, time-averaged;
* ``queue_wait_s``: how long the requests dispatched in the window had waited;
* ``capacity`` and ``max_batch``: batches the replica runs at once, rows per batch.

:func:`queue_policy` turns that into a replica count. Each replica's load, in batch
units, is ``inflight + queued / max_batch``; the deployment wants
``sum(load) / target_ongoing_requests`` replicas. A sustained queue therefore asks for as
many replicas as it would take to drain it, in one decision, rather than the 1.33x a
capped in-flight count allows. When requests also wait longer than
``TARGET_QUEUE_WAIT_S``, the count grows at least in proportion (up to 4x a decision).

Bounds and delays: Ray Serve wraps every custom policy with ``_apply_autoscaling_config``
(``ray/serve/autoscaling_policy.py``), which applies ``upscale_delay_s`` and
``downscale_delay_s`` (damping), the scaling factors, the cold start from zero (driven by
requests queued on handles, which is how a version scaled to zero wakes up) and the
min/max bounds. This function only decides the desired count.

The module is cloudpickled by value into the Serve controller (Serve does that for custom
policies), so it imports nothing from rayfront.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ray.serve.config import AutoscalingContext

#: Import path for ``autoscaling_config.policy.policy_function``.
POLICY_PATH = "rayfront.deploy.autoscaling:queue_policy"
#: The custom metrics each replica reports (names of ``VersionEngine.load_report`` keys).
METRIC_INFLIGHT = "inflight"
METRIC_QUEUED = "queued"
METRIC_QUEUE_WAIT = "queue_wait_s"
METRIC_CAPACITY = "capacity"
METRIC_MAX_BATCH = "max_batch"
#: Requests waiting longer than this on average are a reason to scale up by itself.
TARGET_QUEUE_WAIT_S = 0.05
#: The most one decision multiplies the replica count by on queue wait alone.
MAX_WAIT_GROWTH = 4.0
#: Key in policy_state holding the load the last decision saw (for logs and tests).
STATE_LOAD = "rayfront_load"
STATE_WAIT = "rayfront_queue_wait_s"


def _finite(values: Any) -> list[float]:
    return [float(v) for v in (values or {}).values() if v is not None and v == v]


def observed_load(ctx: AutoscalingContext) -> tuple[float, float]:
    """(total load in batches, mean queue wait in seconds) over the deployment's replicas.

    Handle calls (the fallback while endpoints are unknown, and cold starts) are counted
    too, one batch each, so load shows before the first replica has reported.
    """
    metrics = ctx.aggregated_metrics or {}
    inflight = metrics.get(METRIC_INFLIGHT) or {}
    queued = metrics.get(METRIC_QUEUED) or {}
    max_batch = metrics.get(METRIC_MAX_BATCH) or {}
    load = 0.0
    for replica, running in inflight.items():
        if running is None or running != running:
            continue
        rows = max(float(max_batch.get(replica) or 1.0), 1.0)
        waiting = queued.get(replica) or 0.0
        load += float(running) + float(waiting if waiting == waiting else 0.0) / rows
    handles = float(ctx.total_num_requests or 0.0)
    waits = _finite(metrics.get(METRIC_QUEUE_WAIT))
    wait = sum(waits) / len(waits) if waits else 0.0
    return max(load, handles), wait


def queue_policy(ctx: AutoscalingContext) -> tuple[float, dict[str, Any]]:
    """Desired replicas from the replicas' queues and batches in flight, within bounds.

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
    load, wait = observed_load(ctx)
    state[STATE_LOAD] = load
    state[STATE_WAIT] = wait
    desired = load / target
    if wait > TARGET_QUEUE_WAIT_S:
        growth = min(wait / TARGET_QUEUE_WAIT_S, MAX_WAIT_GROWTH)
        desired = max(desired, ctx.current_num_replicas * growth)
    return max(float(low), min(float(high), desired)), state
