"""CanaryManager: validation, simulated rollouts with a fake clock, persistence, metrics."""

from __future__ import annotations

import asyncio
import json
import random

import numpy as np
import pytest

from rayfront.canary.state import RolloutPlan
from rayfront.canary.store import CanaryStore
from rayfront.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)

MODEL = "digits"  # the model the conftest repository holds

LOGITS = np.array([[2.0, 0.5, 0.1], [0.1, 3.0, 0.2]], dtype=np.float32)


def _plan(**kw) -> RolloutPlan:
    base = {
        "canary_version": "2",
        "stable_version": "1",
        "steps": [5, 25, 50, 100],
        "interval_s": 30,
        "max_error_rate": 0.01,
        "max_p99_ratio": 1.2,
        "min_agreement": 0.98,
        "min_requests": 50,
        "min_shadow_samples": 10,
        "shadow_percent": 20,
        "grace_period_s": 60,
    }
    base.update(kw)
    return RolloutPlan(**base)


def _traffic(manager, n, rng, *, canary_error_rate=0.0, canary_latency=0.010, flip=False):
    """Drive ``n`` unpinned requests through the router like the gateway would."""
    router = manager.router_for(MODEL)
    for _ in range(n):
        version = router.pick(None, rng)
        if version == "2":
            manager.record_request(MODEL, "2", rng.random() >= canary_error_rate, canary_latency)
        else:
            manager.record_request(MODEL, version, True, 0.010)
        target = router.shadow_for(version, rng)
        if target is not None:
            manager.record_request(MODEL, target, True, canary_latency)
            out = LOGITS[:, ::-1] if flip else LOGITS
            manager.record_shadow(MODEL, target, {"logits": LOGITS}, {"logits": out})


def _tick(manager, clock, seconds):
    clock.advance(seconds)
    return asyncio.run(manager.tick(clock()))


def _metric(registry, name, **labels):
    return registry.get_sample_value(name, labels)


def test_manager_routes_to_latest_live_version_when_no_policy_is_stored(make_manager, repo):
    manager = make_manager()
    assert manager.router_for(MODEL).pick(None, random.Random(0)) == "3"
    assert not (repo / MODEL / "rollout.json").exists()


def test_rollout_promotes_canary_when_every_step_passes(make_manager, clock, fleet, registry, repo):
    manager = make_manager()
    rng = random.Random(42)
    manager.start(MODEL, _plan())
    seen = []
    for _ in range(4):
        seen.append(dict(manager.policy(MODEL).weights))
        _traffic(manager, 1_500, rng)
        decisions = _tick(manager, clock, 31)
        assert len(decisions) == 1, decisions
    assert seen == [
        {"1": 95, "2": 5},
        {"1": 75, "2": 25},
        {"1": 50, "2": 50},
        {"1": 0, "2": 100},
    ]
    status = manager.status(MODEL)
    assert status["rollout"]["status"] == "promoted"
    assert status["policy"]["weights"] == {"2": 100}
    assert [d["action"] for d in status["rollout"]["history"]] == [
        "start",
        "advance",
        "advance",
        "advance",
        "promote",
    ]
    # The 100% step had no stable traffic: it was judged against the saved baseline.
    assert status["latest_comparison"]["stable_source"] == "baseline"
    assert fleet.retired == [(MODEL, "1", 60.0)]
    assert manager.router_for(MODEL).pick("any-key") == "2"
    assert _metric(registry, "rayfront_canary_weight", model=MODEL, version="2") == 100
    assert _metric(registry, "rayfront_canary_weight", model=MODEL, version="1") is None
    assert _metric(registry, "rayfront_canary_decisions_total", model=MODEL, action="advance") == 3
    json.dumps(status)  # JSON-ready
    assert (
        json.loads((repo / MODEL / "rollout.json").read_text())["rollout"]["status"] == "promoted"
    )


def test_rollout_rolls_back_with_reason_when_canary_errors(make_manager, clock, registry):
    manager = make_manager()
    manager.start(MODEL, _plan())
    _traffic(manager, 3_000, random.Random(1), canary_error_rate=0.2)
    _tick(manager, clock, 31)
    ro = manager.status(MODEL)["rollout"]
    assert ro["status"] == "rolled_back"
    assert ro["reason"].startswith("canary error rate")
    assert "> max_error_rate 1.00%" in ro["reason"]
    assert manager.policy(MODEL).weights == {"1": 100, "2": 0}
    assert manager.policy(MODEL).shadow_target is None
    assert ro["rollback_count"] == 1
    assert _metric(registry, "rayfront_canary_rollbacks_total", model=MODEL) == 1
    assert _metric(registry, "rayfront_canary_weight", model=MODEL, version="2") == 0
    exported = _metric(
        registry, "rayfront_canary_analysis", model=MODEL, metric="canary_error_rate"
    )
    assert exported == ro["history"][-1]["comparison"]["canary_error_rate"] > 0.01


def test_rollout_rolls_back_when_mirrored_outputs_disagree(make_manager, clock):
    manager = make_manager()
    manager.start(MODEL, _plan())
    _traffic(manager, 3_000, random.Random(2), flip=True)
    _tick(manager, clock, 31)
    ro = manager.status(MODEL)["rollout"]
    assert ro["status"] == "rolled_back"
    assert ro["reason"].startswith("output agreement 50.00% < min_agreement 98.00%")


def test_rollout_rolls_back_at_once_when_canary_becomes_unhealthy(make_manager, clock, fleet):
    manager = make_manager()
    manager.start(MODEL, _plan())
    fleet.unhealthy.add((MODEL, "2"))
    decisions = _tick(manager, clock, 1)  # long before the step interval
    assert [d.action for _, d in decisions] == ["rollback"]
    assert "canary version 2 is unhealthy" in decisions[0][1].reason
    assert manager.policy(MODEL).weights == {"1": 100, "2": 0}


def test_start_gives_no_traffic_when_canary_is_unhealthy(make_manager, fleet):
    fleet.unhealthy.add((MODEL, "2"))
    manager = make_manager()
    state = manager.start(MODEL, _plan())
    assert state.status == "rolled_back"
    assert "unhealthy at start" in state.reason
    assert manager.policy(MODEL).weights == {"1": 100, "2": 0}


def test_rollout_pauses_when_data_is_insufficient_and_advances_after_resume(make_manager, clock):
    manager = make_manager()
    manager.start(MODEL, _plan())
    _traffic(manager, 100, random.Random(3))  # ~5 canary requests < 50
    # At the interval the step keeps collecting (4 more intervals by default)...
    assert _tick(manager, clock, 31) == []
    assert manager.status(MODEL)["rollout"]["status"] == "running"
    # ...and pauses once its patience is spent with still too little data.
    _tick(manager, clock, 120)
    ro = manager.status(MODEL)["rollout"]
    assert ro["status"] == "paused"
    assert ro["reason"].startswith("insufficient data: canary requests")
    assert manager.policy(MODEL).weights == {"1": 95, "2": 5}  # never promoted, nothing moved
    assert _tick(manager, clock, 300) == []  # paused rollouts wait for an operator
    manager.resume(MODEL)
    _traffic(manager, 2_000, random.Random(4))
    assert _tick(manager, clock, 10) == []  # the interval restarted at resume
    _tick(manager, clock, 21)
    assert manager.policy(MODEL).weights == {"1": 75, "2": 25}


def test_start_refuses_second_rollout_when_one_is_active(make_manager, repo):
    manager = make_manager()
    manager.start(MODEL, _plan())
    before = (repo / MODEL / "rollout.json").read_bytes()
    with pytest.raises(AlreadyExistsError, match="already has a running rollout of version 2"):
        manager.start(MODEL, _plan())
    assert (repo / MODEL / "rollout.json").read_bytes() == before


def test_start_refuses_version_when_not_live(make_manager, repo):
    manager = make_manager()
    with pytest.raises(
        NotFoundError,
        match=r"canary version '7' of model 'digits' is not live \(live versions: 1, 2, 3\)",
    ):
        manager.start(MODEL, _plan(canary_version="7"))
    assert not (repo / MODEL / "rollout.json").exists()


def test_start_refuses_model_when_unknown(make_manager):
    with pytest.raises(NotFoundError, match="model 'nope' not found"):
        make_manager().start("nope", _plan())


def test_start_refuses_canary_when_signature_differs(make_manager, repo):
    manager = make_manager()
    with pytest.raises(
        InvalidArgumentError,
        match="canary version 3 of model 'digits' has a different signature from stable version 1: "
        "output 'logits': stable datatype FP32, canary FP16",
    ):
        manager.start(MODEL, _plan(canary_version="3"))
    assert not (repo / MODEL / "rollout.json").exists()


def test_set_weights_refuses_weights_when_sum_is_not_100(make_manager, repo):
    manager = make_manager()
    manager.set_weights(MODEL, {"1": 90, "2": 10})
    before = (repo / MODEL / "rollout.json").read_bytes()
    router = manager.router_for(MODEL)
    with pytest.raises(
        InvalidArgumentError, match=r"weights must sum to 100, got 110 \(1=90, 2=20\)"
    ):
        manager.set_weights(MODEL, {"1": 90, "2": 20})
    with pytest.raises(NotFoundError, match="version '9' of model 'digits' is not live"):
        manager.set_weights(MODEL, {"1": 90, "9": 10})
    with pytest.raises(
        InvalidArgumentError,
        match=r"weight of version 1 of model .digits. must be an integer percent, got 90\.5",
    ):
        manager.set_weights(MODEL, {"1": 90.5, "2": 9.5})
    with pytest.raises(InvalidArgumentError, match="positive integer version"):
        manager.set_weights(MODEL, {"v1": 100})
    assert (repo / MODEL / "rollout.json").read_bytes() == before
    assert manager.router_for(MODEL) is router


def test_set_weights_swaps_router_when_weights_change(make_manager):
    manager = make_manager()
    manager.set_weights(MODEL, {"1": 90, "2": 10})
    old = manager.router_for(MODEL)
    assert manager.router_for(MODEL) is old  # cached
    manager.set_weights(MODEL, {"1": 10, "2": 90})
    new = manager.router_for(MODEL)
    assert new is not old
    assert old.weights == {"1": 90, "2": 10}  # an in-flight holder keeps a working router
    assert new.weights == {"1": 10, "2": 90}


def test_set_weights_refuses_change_when_rollout_running_and_records_it_when_paused(make_manager):
    manager = make_manager()
    manager.start(MODEL, _plan())
    with pytest.raises(
        FailedPreconditionError, match=r"running rollout of version 2.*pause digits"
    ):
        manager.set_weights(MODEL, {"1": 50, "2": 50})
    manager.pause(MODEL)
    manager.set_weights(MODEL, {"1": 50, "2": 50})
    ro = manager.status(MODEL)["rollout"]
    assert ro["weights"] == {"1": 50, "2": 50}
    assert ro["history"][-1]["action"] == "manual"


def test_state_change_does_not_take_effect_when_persisting_fails(make_manager, monkeypatch):
    manager = make_manager()
    manager.set_weights(MODEL, {"1": 90, "2": 10})

    def broken(doc):
        raise OSError("disk full")

    monkeypatch.setattr(manager._store, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        manager.set_weights(MODEL, {"1": 50, "2": 50})
    assert manager.policy(MODEL).weights == {"1": 90, "2": 10}
    assert manager.router_for(MODEL).weights == {"1": 90, "2": 10}


def test_new_manager_resumes_same_step_and_weights_when_restarted(make_manager, clock, repo):
    manager = make_manager()
    manager.start(MODEL, _plan())
    _traffic(manager, 1_500, random.Random(5))
    _tick(manager, clock, 31)
    before = manager.status(MODEL)["rollout"]
    assert before["step_index"] == 1

    clock.advance(3_600)  # down for an hour: the old step start is long past
    again = make_manager(registry=None)
    after = again.status(MODEL)["rollout"]
    assert after["step_index"] == 1
    assert after["status"] == "running"
    assert again.policy(MODEL).weights == {"1": 75, "2": 25}
    assert after["history"] == before["history"]
    # No jump ahead: the interval timer restarted, so nothing is judged on no data.
    assert again.evaluate(clock()) == []
    assert again.status(MODEL)["rollout"]["next_analysis_in_s"] == pytest.approx(30)


def test_new_manager_refires_retirement_when_restarted_within_grace(make_manager, clock, fleet):
    manager = make_manager()
    manager.start(MODEL, _plan())
    manager.promote(MODEL)
    assert fleet.retired == [(MODEL, "1", 60.0)]
    clock.advance(20)
    make_manager(registry=None)
    assert fleet.retired[-1] == (MODEL, "1", 40.0)


def test_actions_follow_lifecycle_when_called_in_order(make_manager):
    manager = make_manager()
    with pytest.raises(FailedPreconditionError, match="has no rollout; start one first"):
        manager.pause(MODEL)
    manager.start(MODEL, _plan())
    with pytest.raises(
        FailedPreconditionError, match="is running; this action needs it to be paused"
    ):
        manager.resume(MODEL)
    assert manager.pause(MODEL).status == "paused"
    assert manager.resume(MODEL).status == "running"
    aborted = manager.abort(MODEL, "bad idea")
    assert aborted.status == "aborted" and aborted.reason == "bad idea"
    assert manager.policy(MODEL).weights == {"1": 100, "2": 0}
    with pytest.raises(FailedPreconditionError, match="is aborted"):
        manager.promote(MODEL)
    # A finished rollout does not block the next one.
    assert manager.start(MODEL, _plan()).status == "running"


def test_set_shadow_mirrors_to_canary_when_rollout_active_and_target_omitted(make_manager):
    manager = make_manager()
    with pytest.raises(InvalidArgumentError, match="needs a target version"):
        manager.set_shadow(MODEL, 10, None)
    manager.start(MODEL, _plan(min_agreement=0, shadow_percent=0))
    policy = manager.set_shadow(MODEL, 30, None)
    assert (policy.shadow_percent, policy.shadow_target) == (30, "2")
    with pytest.raises(NotFoundError, match="shadow target '8'"):
        manager.set_shadow(MODEL, 30, "8")
    assert manager.set_shadow(MODEL, 0, None).shadow_target is None


def test_record_shadow_counts_error_when_candidate_failed(make_manager):
    manager = make_manager()
    manager.record_shadow(MODEL, "2", {"logits": LOGITS}, None)
    manager.record_shadow(MODEL, "2", {"logits": LOGITS}, {"logits": LOGITS})
    shadow = manager.status(MODEL)["shadow"]["2"]
    assert (shadow["errors"], shadow["rows"], shadow["agreement"]) == (1, 2, 1.0)


def test_run_loop_evaluates_until_cancelled(make_manager, fleet):
    manager = make_manager()
    manager.start(MODEL, _plan())
    fleet.unhealthy.add((MODEL, "2"))

    async def main():
        task = asyncio.create_task(manager.run(0.01))
        for _ in range(500):
            if manager.status(MODEL)["rollout"]["status"] == "rolled_back":
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert manager.status(MODEL)["rollout"]["status"] == "rolled_back"


def test_manager_refuses_to_start_when_stored_state_is_corrupt(make_manager, repo):
    (repo / MODEL / "rollout.json").write_text("{not json")
    with pytest.raises(Exception, match="unreadable"):
        make_manager()


def test_refresh_reloads_documents_when_owner_changed_them(make_manager, repo, clock, fleet):
    owner = make_manager()
    follower = make_manager(registry=None)
    owner.set_weights(MODEL, {"1": 30, "2": 70})
    assert follower.refresh() == [MODEL]
    assert follower.router_for(MODEL).weights == {"1": 30, "2": 70}
    assert follower.refresh() == []
    assert isinstance(owner._store, CanaryStore)


def test_owner_sees_a_pause_taken_by_another_gateway_and_does_not_overwrite_it(make_manager, clock):
    owner = make_manager()
    other = make_manager(registry=None)
    owner.start(MODEL, _plan())
    other.refresh()
    other.pause(MODEL, "paused on the second gateway")
    _traffic(owner, 2000, np.random.default_rng(3))  # enough, and healthy: it would advance
    clock.advance(120)
    owner.evaluate()  # before the fix it judged its stale "running" copy and saved it
    assert owner.status(MODEL)["rollout"]["status"] == "paused"
    assert make_manager(registry=None).status(MODEL)["rollout"]["status"] == "paused"


def test_admin_changes_on_two_gateways_both_survive(make_manager):
    first = make_manager()
    second = make_manager(registry=None)
    first.set_shadow(MODEL, 10.0, "2")
    # `second` never refreshed: its change must start from the document on disk.
    second.set_weights(MODEL, {"1": 60, "2": 40})
    final = make_manager(registry=None).policy(MODEL)
    assert final.weights == {"1": 60, "2": 40}
    assert final.shadow_percent == 10.0 and final.shadow_target == "2"


def test_owner_runs_a_rollout_started_on_another_gateway(make_manager, clock):
    owner = make_manager()
    other = make_manager(registry=None)
    other.start(MODEL, _plan(max_p99_ratio=100.0))
    assert owner.evaluate() == []  # picks the rollout up (and its split); too early to judge
    assert owner.router_for(MODEL).weights == {"1": 95, "2": 5}
    _traffic(owner, 2000, np.random.default_rng(4))
    clock.advance(120)
    decisions = owner.evaluate()
    assert [d.action for _, d in decisions] == ["advance"], decisions


def test_judging_process_counts_the_traffic_other_ingress_processes_saw(make_manager, clock):
    """Canary errors seen only by a second ingress process still roll the canary back."""
    judge = make_manager()
    other = make_manager(registry=None)
    judge.peer_windows = lambda: [other.export_windows()]
    judge.start(MODEL, _plan(max_p99_ratio=100.0, min_agreement=0.0, shadow_percent=0))
    other.refresh()
    rng = np.random.default_rng(5)
    _traffic(judge, 2000, rng)  # healthy on the judge's share
    _traffic(other, 2000, rng, canary_error_rate=0.5)  # the canary fails on the other's
    clock.advance(120)
    decisions = judge.evaluate()
    assert [d.action for _, d in decisions] == ["rollback"], decisions
    assert decisions[0][1].comparison["ingress_processes"] == 2


def test_a_process_starts_a_new_window_when_another_advances_the_step(make_manager, clock):
    judge = make_manager()
    other = make_manager(registry=None)
    judge.start(MODEL, _plan(max_p99_ratio=100.0, min_agreement=0.0, shadow_percent=0))
    other.refresh()
    _traffic(other, 500, np.random.default_rng(6))
    assert other.export_windows()[MODEL]["versions"]["1"]["requests"] > 0
    _traffic(judge, 2000, np.random.default_rng(7))
    clock.advance(120)
    assert [d.action for _, d in judge.evaluate()] == ["advance"]
    other.refresh()
    windows = other.export_windows()[MODEL]
    assert all(w["requests"] == 0 for w in windows["versions"].values())
    assert windows["step"] == judge.export_windows()[MODEL]["step"]


def test_rollout_advances_when_a_short_step_gathers_its_data_within_patience(make_manager, clock):
    manager = make_manager()
    manager.start(MODEL, _plan())
    _traffic(manager, 100, random.Random(5))
    assert _tick(manager, clock, 31) == []  # short of data at the interval: still running
    _traffic(manager, 1_500, random.Random(6))
    (decision,) = _tick(manager, clock, 30)
    assert decision[1].action == "advance"
    assert manager.policy(MODEL).weights == {"1": 75, "2": 25}
