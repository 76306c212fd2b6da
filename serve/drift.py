"""Data drift: reference profiles at export, live windows at serve time, and the statistics.

``rayfront export`` records a :class:`ReferenceProfile` of every input and output in the
version's sidecar: from a reference sample the user passes (``--reference data.npz``) or,
failing that, from the parity inputs (then ``source`` says so, and drift only means "unlike
random data"). A continuous tensor is profiled as the distribution of its elements over
quantile bins of the reference (so each reference bin holds about the same share), with
per-feature mean and std when a row has few enough features to list; an integer tensor
(token ids, categories) as the frequency of its most common values plus "other".

At serve time a :class:`DriftMonitor` keeps, per input and output, the live counts over
the same bins in a sliding window of time buckets, and reports:

* **PSI**, the population stability index ``sum((p - q) * ln(p / q))`` over the bins
  (below 0.1: stable; 0.1-0.25: moderate shift; above 0.25: significant shift);
* **KS**, the largest gap between the reference and live CDFs at the bin edges
  (continuous tensors only; a binned Kolmogorov-Smirnov statistic).

Everything here is numpy and pydantic: no framework, no I/O.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

#: Bins of a continuous profile (quantiles of the reference).
BINS = 10
#: Most common values kept for an integer tensor (the rest is "other").
TOP_CATEGORIES = 20
#: Per-feature statistics are kept for rows of at most this many features.
MAX_FEATURES = 256
#: Proportions are floored at this before logs, so an empty bin does not make PSI infinite.
_EPS = 1e-4

PSI_MODERATE = 0.1
PSI_SIGNIFICANT = 0.25


class TensorProfile(BaseModel):
    """The distribution of one tensor's values in a reference sample."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["continuous", "categorical"] = Field(description="How it is binned.")
    count: int = Field(ge=0, description="Elements profiled.")
    mean: float = Field(description="Mean of the elements.")
    std: float = Field(ge=0, description="Standard deviation of the elements.")
    min: float = Field(description="Smallest element.")
    max: float = Field(description="Largest element.")
    edges: list[float] = Field(
        default_factory=list, description="Continuous: inner bin edges (quantiles)."
    )
    categories: list[int] = Field(
        default_factory=list, description="Categorical: the most common values."
    )
    freqs: list[float] = Field(
        description="Share of elements per bin (continuous) or per category then 'other'."
    )
    feature_mean: list[float] = Field(
        default_factory=list, description="Per-feature mean (rows of few features only)."
    )
    feature_std: list[float] = Field(
        default_factory=list, description="Per-feature standard deviation (same rows)."
    )


class ReferenceProfile(BaseModel):
    """Profiles of a version's inputs and outputs on its reference sample."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="Where the sample came from (a file, or the parity inputs).")
    rows: int = Field(ge=0, description="Rows (requests' batch entries) in the sample.")
    inputs: dict[str, TensorProfile] = Field(default_factory=dict, description="Per input.")
    outputs: dict[str, TensorProfile] = Field(default_factory=dict, description="Per output.")

    def tensors(self) -> dict[tuple[str, str], TensorProfile]:
        """Every profile keyed by (``"input"`` or ``"output"``, tensor name)."""
        return {
            **{("input", n): p for n, p in self.inputs.items()},
            **{("output", n): p for n, p in self.outputs.items()},
        }


def _categorical(values: np.ndarray) -> bool:
    return values.dtype.kind in "iub"


def profile_tensor(values: np.ndarray, *, batched: bool = True) -> TensorProfile:
    """Profile a reference tensor (rows first when ``batched``); pure."""
    arr = np.asarray(values)
    if arr.dtype.kind not in "iubf":
        raise ValueError(f"cannot profile a {arr.dtype} tensor (numeric tensors only)")
    flat = arr.reshape(-1).astype(np.float64)
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        raise ValueError("cannot profile a tensor without finite values")
    stats = {
        "count": int(flat.size),
        "mean": float(flat.mean()),
        "std": float(flat.std()),
        "min": float(flat.min()),
        "max": float(flat.max()),
    }
    if _categorical(arr):
        values_, counts = np.unique(flat.astype(np.int64), return_counts=True)
        order = np.argsort(-counts, kind="stable")[:TOP_CATEGORIES]
        cats = values_[order]
        top = counts[order] / flat.size
        freqs = [*top.tolist(), float(max(0.0, 1.0 - top.sum()))]
        return TensorProfile(
            kind="categorical", categories=[int(c) for c in cats], freqs=freqs, **stats
        )
    edges = np.unique(np.quantile(flat, np.linspace(0, 1, BINS + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, flat, side="right"), minlength=edges.size + 1)
    feature_mean: list[float] = []
    feature_std: list[float] = []
    if batched and arr.ndim >= 2 and arr.shape[0] > 1:
        rows = arr.reshape(arr.shape[0], -1).astype(np.float64)
        if rows.shape[1] <= MAX_FEATURES:
            feature_mean = rows.mean(axis=0).tolist()
            feature_std = rows.std(axis=0).tolist()
    return TensorProfile(
        kind="continuous",
        edges=edges.tolist(),
        freqs=(counts / flat.size).tolist(),
        feature_mean=feature_mean,
        feature_std=feature_std,
        **stats,
    )


def profile_sample(
    source: str, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]
) -> ReferenceProfile:
    """A reference profile of every numeric input and output of a sample; pure."""
    rows = int(next(iter(inputs.values())).shape[0]) if inputs else 0

    def numeric(named: Mapping[str, np.ndarray]) -> dict[str, TensorProfile]:
        return {
            n: profile_tensor(v) for n, v in named.items() if np.asarray(v).dtype.kind in "iubf"
        }

    return ReferenceProfile(
        source=source, rows=rows, inputs=numeric(inputs), outputs=numeric(outputs)
    )


def bin_counts(profile: TensorProfile, values: np.ndarray) -> np.ndarray:
    """Counts of ``values`` over the profile's bins (the same layout as ``freqs``); pure."""
    flat = np.asarray(values).reshape(-1)
    if profile.kind == "categorical":
        cats = np.asarray(profile.categories, dtype=np.int64)
        ints = flat.astype(np.int64)
        counts = np.zeros(cats.size + 1, dtype=np.float64)
        if cats.size:
            order = np.argsort(cats)
            pos = np.searchsorted(cats[order], ints)
            pos = np.clip(pos, 0, cats.size - 1)
            hit = cats[order][pos] == ints
            np.add.at(counts, order[pos[hit]], 1.0)
            counts[-1] = float((~hit).sum())
        else:
            counts[-1] = float(ints.size)
        return counts
    floats = flat.astype(np.float64)
    floats = floats[np.isfinite(floats)]
    edges = np.asarray(profile.edges, dtype=np.float64)
    idx = np.searchsorted(edges, floats, side="right")
    return np.bincount(idx, minlength=edges.size + 1).astype(np.float64)


def psi(reference: np.ndarray | list[float], counts: np.ndarray) -> float:
    """Population stability index of live ``counts`` against reference shares; pure."""
    total = float(np.sum(counts))
    if total <= 0:
        return 0.0
    p = np.maximum(np.asarray(reference, dtype=np.float64), _EPS)
    q = np.maximum(np.asarray(counts, dtype=np.float64) / total, _EPS)
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum((q - p) * np.log(q / p)))


def ks_binned(reference: np.ndarray | list[float], counts: np.ndarray) -> float:
    """Largest CDF gap at the bin edges (binned Kolmogorov-Smirnov); pure."""
    total = float(np.sum(counts))
    if total <= 0:
        return 0.0
    ref_cdf = np.cumsum(np.asarray(reference, dtype=np.float64))
    live_cdf = np.cumsum(np.asarray(counts, dtype=np.float64) / total)
    return float(np.max(np.abs(ref_cdf - live_cdf)))


def verdict(value: float) -> str:
    """stable / moderate / significant, by the usual PSI thresholds."""
    if value >= PSI_SIGNIFICANT:
        return "significant"
    if value >= PSI_MODERATE:
        return "moderate"
    return "stable"


class DriftMonitor:
    """Live bin counts of one version's tensors over a sliding window of time buckets.

    ``observe`` is called with each sampled request's inputs and outputs (on the ingress
    event loop: a bincount per tensor); ``snapshot`` merges the window's buckets.
    Thread-safe, bounded: ``window_s / bucket_s`` buckets of a few counts each.
    """

    def __init__(
        self,
        reference: ReferenceProfile,
        *,
        window_s: float = 300.0,
        bucket_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if bucket_s <= 0 or window_s < bucket_s:
            raise ValueError(f"need 0 < bucket_s <= window_s, got {bucket_s}, {window_s}")
        self.reference = reference
        self._profiles = reference.tensors()
        self._bucket_s = bucket_s
        self._buckets: deque[tuple[int, dict[tuple[str, str], np.ndarray]]] = deque(
            maxlen=max(1, round(window_s / bucket_s))
        )
        self._clock = clock
        self._lock = threading.Lock()

    def observe(self, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> None:
        counts = {}
        for (role, name), prof in self._profiles.items():
            values = (inputs if role == "input" else outputs).get(name)
            if values is not None:
                counts[(role, name)] = bin_counts(prof, values)
        slot = int(self._clock() // self._bucket_s)
        with self._lock:
            if not self._buckets or self._buckets[-1][0] != slot:
                self._buckets.append((slot, {}))
            bucket = self._buckets[-1][1]
            for key, c in counts.items():
                if key in bucket:
                    bucket[key] += c
                else:
                    bucket[key] = c

    def live_counts(self) -> dict[tuple[str, str], np.ndarray]:
        """Counts per (role, tensor) over the buckets still inside the window."""
        oldest = int(self._clock() // self._bucket_s) - (self._buckets.maxlen or 1) + 1
        merged: dict[tuple[str, str], np.ndarray] = {}
        with self._lock:
            for slot, bucket in self._buckets:
                if slot < oldest:
                    continue
                for key, c in bucket.items():
                    merged[key] = merged[key] + c if key in merged else c.copy()
        return merged

    def snapshot(self) -> list[tuple[str, str, str, float]]:
        """(role, tensor, statistic, value): psi for every tensor, ks for continuous ones."""
        out: list[tuple[str, str, str, float]] = []
        for key, counts in self.live_counts().items():
            prof = self._profiles[key]
            out.append((key[0], key[1], "psi", psi(prof.freqs, counts)))
            if prof.kind == "continuous":
                out.append((key[0], key[1], "ks", ks_binned(prof.freqs, counts)))
        return out
