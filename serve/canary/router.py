"""Hot-path version choice: weighted split, sticky keys, shadow sampling.

A :class:`Router` is built once per policy change (``Router.from_policy``) and then only
read, so the per-request cost is one random draw or one short hash plus a bisect over at
most a handful of boundaries; no pydantic objects are touched per request. Routers are
immutable: the gateway swaps in a new one on a weight change while in-flight requests
keep the one they started with, so nothing is dropped or fails mid-change.

Sticky routing maps a request key to one of ``BUCKETS`` buckets with blake2b (stable
across processes and restarts, unlike ``hash()``), and the buckets onto the versions'
cumulative weights in numeric version order. The same key therefore reaches the same
version while the weights are unchanged, and moving weight between two versions that are
adjacent in that order (always true for a stable/canary pair) moves exactly the keys in
the moved share and no others. With three or more weighted versions, moving weight
between non-adjacent versions also shifts the boundary of the versions between them.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Mapping
from hashlib import blake2b

from rayfront.canary.state import TrafficPolicy, version_key

BUCKETS = 10_000
_PER_PERCENT = BUCKETS // 100


def key_bucket(route_key: str) -> int:
    """The sticky bucket of ``route_key`` in ``[0, BUCKETS)``, identical in every process."""
    digest = blake2b(route_key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


class Router:
    """Precomputed cumulative table for one traffic policy."""

    __slots__ = ("_bounds", "_shadow_p", "_single", "_versions", "shadow_target", "weights")

    def __init__(
        self,
        weights: Mapping[str, int],
        *,
        shadow_percent: float = 0.0,
        shadow_target: str | None = None,
    ) -> None:
        ordered = sorted(
            ((v, w) for v, w in weights.items() if w > 0), key=lambda i: version_key(i[0])
        )
        if not ordered or sum(w for _, w in ordered) != 100:
            raise ValueError(
                f"router weights must sum to 100 over positive entries, got {dict(weights)}"
            )
        self.weights: dict[str, int] = dict(weights)
        self._versions: tuple[str, ...] = tuple(v for v, _ in ordered)
        bounds: list[int] = []
        acc = 0
        for _, w in ordered:
            acc += w * _PER_PERCENT
            bounds.append(acc)
        # Upper bound of each version's bucket range; bisect_right finds the owner.
        self._bounds: tuple[int, ...] = tuple(bounds)
        self._single: str | None = self._versions[0] if len(self._versions) == 1 else None
        self.shadow_target = shadow_target if shadow_percent > 0 else None
        self._shadow_p = shadow_percent / 100.0 if self.shadow_target is not None else 0.0

    @classmethod
    def from_policy(cls, policy: TrafficPolicy) -> Router:
        """Build the table for ``policy`` (call on change, not per request)."""
        return cls(
            policy.weights,
            shadow_percent=policy.shadow_percent,
            shadow_target=policy.shadow_target,
        )

    @property
    def versions(self) -> tuple[str, ...]:
        """Versions that receive split traffic (weight > 0), in numeric order."""
        return self._versions

    def pick(self, route_key: str | None = None, rng: random.Random | None = None) -> str:
        """The version for one unpinned request: sticky by key, else drawn by weight."""
        if self._single is not None:
            return self._single
        if route_key is not None and route_key != "":
            bucket = key_bucket(route_key)
        else:
            bucket = int((rng.random() if rng is not None else random.random()) * BUCKETS)
        return self._versions[bisect_right(self._bounds, bucket)]

    def should_shadow(self, rng: random.Random | None = None) -> bool:
        """Whether to mirror this request to ``shadow_target`` (a shadow_percent draw)."""
        if self._shadow_p <= 0.0:
            return False
        return (rng.random() if rng is not None else random.random()) < self._shadow_p

    def shadow_for(self, served_version: str, rng: random.Random | None = None) -> str | None:
        """The version to mirror a request served by ``served_version`` to, or None.

        A request already served by the shadow target is never mirrored to itself.
        """
        target = self.shadow_target
        if target is None or target == served_version:
            return None
        return target if self.should_shadow(rng) else None


def pick_version(
    policy: TrafficPolicy, *, route_key: str | None, rng: random.Random | None = None
) -> str:
    """One-off convenience over :meth:`Router.pick`; the gateway should cache a Router."""
    return Router.from_policy(policy).pick(route_key, rng)


def should_shadow(policy: TrafficPolicy, rng: random.Random | None = None) -> bool:
    """One-off convenience over :meth:`Router.should_shadow`."""
    return Router.from_policy(policy).should_shadow(rng)
