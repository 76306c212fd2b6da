"""The queue-driven autoscaling policy, on fabricated Serve contexts (no Ray started)."""

from __future__ import annotations

import pytest
from ray.serve._private.common import DeploymentID, ReplicaID
from ray.serve.config import AutoscalingConfig, AutoscalingContext, AutoscalingPolicy

from rayfront.deploy.autoscaling import (
    METRIC_INFLIGHT,
    METRIC_MAX_BATCH,
    METRIC_QUEUE_WAIT,
    METRIC_QUEUED,
    POLICY_PATH,
    STATE_LOAD,
    STATE_WAIT,
    observed_load,
    queue_policy,
)

DEP = DeploymentID(name="ModelVersion", app_name="rayfront--mlp--v1")


def _replicas(n: int) -> list[ReplicaID]:
    return [ReplicaID(unique_id=f"r{i}", deployment_id=DEP) for i in range(n)]


def _ctx(
    *,
    running: int,
    inflight: list[float] | None,
    queued: list[float] | None = None,
    max_batch: float = 32.0,
    waits: list[float] | None = None,
    handle_requests: float = 0.0,
    target: float = 1.5,
    low: int = 1,
    high: int = 8,
    target_replicas: int | None = None,
    state: dict | None = None,
    upscale_delay_s: float = 3.0,
    downscale_delay_s: float = 30.0,
) -> AutoscalingContext:
    replicas = _replicas(running)
    metrics: dict = {}
    if inflight is not None:
        metrics[METRIC_INFLIGHT] = dict(zip(replicas, inflight, strict=False))
        metrics[METRIC_QUEUED] = dict(zip(replicas, queued or [0.0] * len(inflight), strict=False))
        metrics[METRIC_MAX_BATCH] = {r: max_batch for r in replicas}
        metrics[METRIC_QUEUE_WAIT] = dict(
            zip(replicas, waits or [0.0] * len(inflight), strict=False)
        )
    config = AutoscalingConfig(
        min_replicas=low,
        max_replicas=high,
        target_ongoing_requests=target,
        upscale_delay_s=upscale_delay_s,
        downscale_delay_s=downscale_delay_s,
        metrics_interval_s=1.0,
        look_back_period_s=5.0,
    )
    return AutoscalingContext(
        deployment_id=DEP,
        deployment_name=DEP.name,
        app_name=DEP.app_name,
        current_num_replicas=running,
        target_num_replicas=running if target_replicas is None else target_replicas,
        running_replicas=replicas,
        total_num_requests=handle_requests,
        total_queued_requests=0.0,
        aggregated_metrics=metrics,
        raw_metrics={},
        capacity_adjusted_min_replicas=low,
        capacity_adjusted_max_replicas=high,
        policy_state=state or {},
        last_scale_up_time=None,
        last_scale_down_time=None,
        current_time=1000.0,
        config=config,
    )


def test_queue_policy_scales_to_load_over_target_when_replicas_are_busy():
    desired, state = queue_policy(_ctx(running=2, inflight=[2.0, 2.0], target=1.5))
    assert desired == pytest.approx(4 / 1.5)
    assert state[STATE_LOAD] == pytest.approx(4.0)


def test_queue_policy_counts_queued_requests_as_batches_when_requests_wait():
    # 64 waiting rows at 32 rows a batch are two more batches of load.
    desired, state = queue_policy(
        _ctx(running=1, inflight=[2.0], queued=[64.0], max_batch=32, target=1.5)
    )
    assert state[STATE_LOAD] == pytest.approx(4.0)
    assert desired == pytest.approx(4 / 1.5)


def test_queue_policy_jumps_to_drain_the_queue_in_one_decision_when_backlog_is_sustained():
    # The old policy could see at most 2 batches per replica (1.33x a decision).
    desired, _ = queue_policy(
        _ctx(running=1, inflight=[2.0], queued=[320.0], max_batch=32, target=1.5, high=16)
    )
    assert desired == pytest.approx(12 / 1.5)


def test_queue_policy_grows_with_queue_wait_when_requests_wait_too_long():
    desired, state = queue_policy(
        _ctx(running=2, inflight=[1.0, 1.0], waits=[0.2, 0.2], target=1.5)
    )
    assert state[STATE_WAIT] == pytest.approx(0.2)
    assert desired == pytest.approx(2 * 4.0)  # 0.2 s is 4x the target wait (capped at 4x)


def test_queue_policy_keeps_count_when_load_matches_target():
    desired, _ = queue_policy(_ctx(running=3, inflight=[1.5, 1.5, 1.5], target=1.5))
    assert desired == pytest.approx(3.0)


def test_queue_policy_clamps_to_max_when_load_exceeds_capacity():
    desired, _ = queue_policy(_ctx(running=2, inflight=[40.0, 40.0], high=5))
    assert desired == 5


def test_queue_policy_clamps_to_min_when_idle():
    desired, _ = queue_policy(_ctx(running=3, inflight=[0.0, 0.0, 0.0], low=2))
    assert desired == 2


def test_queue_policy_uses_handle_count_when_no_replica_reported_yet():
    desired, state = queue_policy(_ctx(running=1, inflight=None, handle_requests=3.0))
    assert desired == pytest.approx(2.0)
    assert state[STATE_LOAD] == pytest.approx(3.0)


def test_observed_load_takes_larger_source_when_both_report():
    # Handle calls are counted by the replicas too, so the two are never added.
    assert observed_load(_ctx(running=2, inflight=[1.0, 2.0], handle_requests=1.0))[0] == 3.0
    assert observed_load(_ctx(running=2, inflight=[0.5, 0.5], handle_requests=4.0))[0] == 4.0


def test_observed_load_ignores_nan_when_a_replica_reports_it():
    assert observed_load(_ctx(running=2, inflight=[float("nan"), 2.0]))[0] == 2.0


def test_queue_policy_returns_current_target_when_no_replica_runs():
    desired, _ = queue_policy(_ctx(running=0, inflight=None, target_replicas=2))
    assert desired == 2


def test_queue_policy_keeps_user_state_when_serve_passes_it_back():
    _, state = queue_policy(_ctx(running=1, inflight=[1.0], state={"k": 1}))
    assert state["k"] == 1


def test_policy_path_loads_the_policy_when_serve_serializes_it():
    policy = AutoscalingPolicy(policy_function=POLICY_PATH).get_policy()
    desired, _ = policy(_ctx(running=2, inflight=[3.0, 3.0], target=2.0))
    assert desired == pytest.approx(3.0)


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    """Serve's delay logic reads time.time(); drive it by hand."""
    import ray.serve.autoscaling_policy as serve_policy

    fake = _Clock(1_000.0)
    monkeypatch.setattr(serve_policy.time, "time", fake)
    return fake


def _serve_wrapped():
    from ray.serve.autoscaling_policy import _apply_autoscaling_config

    return _apply_autoscaling_config(queue_policy)


def test_wrapped_policy_waits_upscale_delay_when_load_rises(clock):
    policy = _serve_wrapped()
    decision, state = policy(_ctx(running=1, inflight=[3.0], upscale_delay_s=3.0))
    assert decision == 1  # wants 2, but the delay has not passed
    clock.now += 1.0
    decision, state = policy(_ctx(running=1, inflight=[3.0], state=state, upscale_delay_s=3.0))
    assert decision == 1
    clock.now += 2.5
    decision, state = policy(_ctx(running=1, inflight=[3.0], state=state, upscale_delay_s=3.0))
    assert decision == 2


def test_wrapped_policy_waits_downscale_delay_when_load_falls(clock):
    policy = _serve_wrapped()
    ctx = dict(running=4, inflight=[0.1, 0.1, 0.1, 0.1], downscale_delay_s=30.0)
    decision, state = policy(_ctx(**ctx))
    assert decision == 4
    clock.now += 20.0
    decision, state = policy(_ctx(**ctx, state=state))
    assert decision == 4
    clock.now += 11.0
    decision, state = policy(_ctx(**ctx, state=state))
    assert decision == 1


def test_wrapped_policy_resets_delay_when_load_recovers_in_between(clock):
    policy = _serve_wrapped()
    decision, state = policy(_ctx(running=1, inflight=[3.0], upscale_delay_s=3.0))
    clock.now += 2.0
    decision, state = policy(_ctx(running=1, inflight=[1.5], state=state, upscale_delay_s=3.0))
    assert decision == 1  # back at target: the pending scale-up is forgotten
    clock.now += 2.0
    decision, state = policy(_ctx(running=1, inflight=[3.0], state=state, upscale_delay_s=3.0))
    assert decision == 1  # the delay starts over
