"""Router: weighted split accuracy, sticky keys, minimal key movement, shadow sampling."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from rayfront.canary.router import BUCKETS, Router, key_bucket, pick_version, should_shadow
from rayfront.canary.state import TrafficPolicy


def _within_4_sigma(count: int, n: int, p: float) -> bool:
    return abs(count - n * p) <= 4 * math.sqrt(n * p * (1 - p))


def test_router_split_matches_weights_when_20000_random_picks_at_80_20():
    router = Router.from_policy(TrafficPolicy(weights={"1": 80, "2": 20}))
    rng = random.Random(1234)
    counts = Counter(router.pick(None, rng) for _ in range(20_000))
    assert set(counts) == {"1", "2"}
    assert _within_4_sigma(counts["2"], 20_000, 0.2), counts


def test_router_sticky_split_matches_weights_when_20000_distinct_keys_at_80_20():
    router = Router.from_policy(TrafficPolicy(weights={"1": 80, "2": 20}))
    counts = Counter(router.pick(f"user-{i}") for i in range(20_000))
    assert _within_4_sigma(counts["2"], 20_000, 0.2), counts


def test_router_sticky_key_reaches_same_version_when_weights_unchanged():
    policy = TrafficPolicy(weights={"1": 50, "2": 30, "3": 20})
    a, b = Router.from_policy(policy), Router.from_policy(policy)
    rng_a, rng_b = random.Random(1), random.Random(2)
    keys = [f"session-{i}" for i in range(2_000)]
    first = [a.pick(k, rng_a) for k in keys]
    assert first == [b.pick(k, rng_b) for k in keys]
    assert first == [a.pick(k, rng_a) for k in keys]
    assert len(set(first)) == 3


def test_key_bucket_is_stable_across_processes_when_key_is_fixed():
    # blake2b, not hash(): the value must never change between runs or Python versions.
    assert key_bucket("customer-42") == key_bucket("customer-42")
    assert 0 <= key_bucket("customer-42") < BUCKETS
    assert (
        key_bucket("customer-42")
        == int.from_bytes(
            __import__("hashlib").blake2b(b"customer-42", digest_size=8).digest(), "big"
        )
        % BUCKETS
    )


def test_router_moves_only_the_shifted_share_when_canary_weight_grows():
    keys = [f"k{i}" for i in range(20_000)]
    before = Router.from_policy(TrafficPolicy(weights={"1": 90, "2": 10}))
    after = Router.from_policy(TrafficPolicy(weights={"1": 75, "2": 25}))
    moved = [k for k in keys if before.pick(k) != after.pick(k)]
    # Exactly the keys whose bucket lies in the 15% that changed hands, all from 1 to 2.
    assert moved == [k for k in keys if 7_500 <= key_bucket(k) < 9_000]
    assert all(before.pick(k) == "1" and after.pick(k) == "2" for k in moved)
    assert _within_4_sigma(len(moved), len(keys), 0.15)


def test_router_never_picks_version_when_its_weight_is_zero():
    router = Router.from_policy(TrafficPolicy(weights={"1": 100, "2": 0}))
    rng = random.Random(0)
    assert {router.pick(None, rng) for _ in range(1_000)} == {"1"}
    assert {router.pick(f"k{i}") for i in range(1_000)} == {"1"}
    assert router.versions == ("1",)


def test_router_orders_versions_numerically_when_labels_have_different_lengths():
    router = Router.from_policy(TrafficPolicy(weights={"10": 50, "9": 50}))
    assert router.versions == ("9", "10")


def test_router_shadow_rate_matches_percent_and_never_mirrors_to_itself():
    router = Router.from_policy(
        TrafficPolicy(weights={"1": 90, "2": 10}, shadow_percent=25, shadow_target="2")
    )
    rng = random.Random(7)
    mirrored = sum(router.shadow_for("1", rng) == "2" for _ in range(20_000))
    assert _within_4_sigma(mirrored, 20_000, 0.25)
    assert all(router.shadow_for("2", rng) is None for _ in range(1_000))


def test_router_never_shadows_when_percent_is_zero():
    router = Router.from_policy(TrafficPolicy(weights={"1": 100}))
    assert router.shadow_target is None
    assert not any(router.should_shadow(random.Random(i)) for i in range(100))


def test_pick_version_and_should_shadow_follow_policy_when_called_directly():
    policy = TrafficPolicy(weights={"1": 0, "2": 100}, shadow_percent=100, shadow_target="1")
    assert pick_version(policy, route_key=None, rng=random.Random(0)) == "2"
    assert pick_version(policy, route_key="abc") == "2"
    assert should_shadow(policy, random.Random(0)) is True


def test_router_rejects_weights_when_they_do_not_sum_to_100():
    with pytest.raises(ValueError, match="must sum to 100"):
        Router({"1": 60, "2": 30})
