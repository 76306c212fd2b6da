"""Canary documents: every validation rule, with the message a user sees."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from rayfront.canary.state import (
    DEFAULT_SHADOW_PERCENT,
    ModelTraffic,
    RolloutPlan,
    RolloutState,
    TrafficPolicy,
)

NOW = datetime(2024, 1, 1, tzinfo=UTC)


def _plan(**kw):
    base = {
        "canary_version": "2",
        "stable_version": "1",
        "steps": [5, 25, 50, 100],
        "interval_s": 30,
    }
    base.update(kw)
    return RolloutPlan(**base)


def test_traffic_policy_rejects_weights_when_sum_is_not_100():
    with pytest.raises(ValidationError, match=r"weights must sum to 100, got 95 \(1=90, 2=5\)"):
        TrafficPolicy(weights={"1": 90, "2": 5})


def test_traffic_policy_rejects_version_when_not_a_positive_integer():
    with pytest.raises(ValidationError, match=r"positive integer version such as '1'.*got 'v1'"):
        TrafficPolicy(weights={"v1": 100})
    with pytest.raises(ValidationError, match="got '01'"):
        TrafficPolicy(weights={"01": 100})


def test_traffic_policy_rejects_weight_when_negative_or_not_integer():
    with pytest.raises(ValidationError, match=r"weight of version '1' must be in 0..100, got 110"):
        TrafficPolicy(weights={"1": 110, "2": -10})
    with pytest.raises(ValidationError, match="valid integer"):
        TrafficPolicy(weights={"1": 50.5, "2": 49.5})


def test_traffic_policy_rejects_shadow_when_target_missing():
    with pytest.raises(ValidationError, match="shadow_percent is 10 but shadow_target is not set"):
        TrafficPolicy(weights={"1": 100}, shadow_percent=10)


def test_traffic_policy_rejects_unknown_field_when_extra_given():
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        TrafficPolicy(weights={"1": 100}, colour="blue")


def test_traffic_policy_stable_is_heaviest_version_when_weights_differ():
    assert TrafficPolicy(weights={"1": 90, "2": 10}).stable == "1"
    assert TrafficPolicy(weights={"1": 50, "2": 50}).stable == "2"


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([], "steps must not be empty"),
        ([5, 50, 25, 100], "strictly ascending"),
        ([5, 25, 50], "the last step must be 100"),
        ([0, 100], r"in 1..100"),
        ([5, 5, 100], "strictly ascending"),
    ],
)
def test_rollout_plan_rejects_steps_when_malformed(steps, message):
    with pytest.raises(ValidationError, match=message):
        _plan(steps=steps)


def test_rollout_plan_rejects_same_version_when_canary_equals_stable():
    with pytest.raises(ValidationError, match="both '2'; a rollout needs two different versions"):
        _plan(stable_version="2")


def test_rollout_plan_defaults_shadow_when_agreement_checked_without_percent():
    assert _plan(min_agreement=0.98).shadow_percent == DEFAULT_SHADOW_PERCENT
    assert _plan(min_agreement=0).shadow_percent == 0


def test_rollout_plan_checks_agreement_by_default():
    plan = _plan()
    assert plan.min_agreement == 0.98  # the gate no other canary tool has, on by default
    assert plan.shadow_percent == DEFAULT_SHADOW_PERCENT  # ...with the traffic it needs


def test_rollout_plan_rejects_agreement_when_shadow_explicitly_off():
    with pytest.raises(ValidationError, match="agreement is measured on mirrored traffic"):
        _plan(min_agreement=0.98, shadow_percent=0)


def test_rollout_plan_rejects_interval_when_not_positive():
    with pytest.raises(ValidationError, match="interval_s"):
        _plan(interval_s=0)


def test_rollout_plan_weights_at_gives_canary_the_step_when_indexed():
    plan = _plan()
    assert plan.weights_at(0) == {"1": 95, "2": 5}
    assert plan.weights_at(3) == {"1": 0, "2": 100}


def test_model_traffic_round_trips_through_json_when_rollout_present():
    plan = _plan()
    doc = ModelTraffic(
        model="digits",
        policy=TrafficPolicy(weights={"1": 95, "2": 5}),
        rollout=RolloutState(
            model="digits",
            plan=plan,
            status="running",
            step_index=0,
            step_started_at=NOW,
            weights={"1": 95, "2": 5},
        ),
    )
    assert ModelTraffic.model_validate_json(doc.model_dump_json()) == doc


def test_model_traffic_rejects_document_when_active_rollout_weights_differ_from_policy():
    with pytest.raises(ValidationError, match="differ from policy weights"):
        ModelTraffic(
            model="digits",
            policy=TrafficPolicy(weights={"1": 100}),
            rollout=RolloutState(
                model="digits",
                plan=_plan(),
                status="running",
                step_index=0,
                step_started_at=NOW,
                weights={"1": 95, "2": 5},
            ),
        )


def test_rollout_state_rejects_step_index_when_past_the_plan():
    with pytest.raises(ValidationError, match="step_index 4 is past the plan's 4 steps"):
        RolloutState(
            model="digits",
            plan=_plan(),
            status="running",
            step_index=4,
            step_started_at=NOW,
            weights={"1": 100},
        )
