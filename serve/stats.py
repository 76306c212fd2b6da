"""Per-model inference statistics in Triton's ``ModelStatistics`` shape (the /stats endpoint).

:class:`StatsAggregator` implements :class:`rayfront.metrics.InferenceRecorder`, so the
batcher feeds it the same way it feeds Prometheus. :meth:`StatsAggregator.snapshot`
returns plain dicts shaped like Triton's HTTP statistics JSON, which also parse into
``tritonclient.grpc.service_pb2.ModelStatistics`` with ``json_format.ParseDict``.
Replicas each keep their own aggregator; :func:`merge_stats` sums their snapshots.

Semantics follow Triton: ``success``/``fail`` count requests and their total duration;
``queue`` and ``compute_*`` are accumulated per executed request (every request in a
batch is charged the batch's compute time, reported by the batcher via ``record_timing``); ``inference_count`` counts rows and
``execution_count`` batches; ``batch_stats`` is per executed batch size.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

StatsDict = dict[str, Any]

# InferStatistics fields, in the proto's order.
INFER_STAT_FIELDS: tuple[str, ...] = (
    "success",
    "fail",
    "queue",
    "compute_input",
    "compute_infer",
    "compute_output",
    "cache_hit",
    "cache_miss",
)
BATCH_STAT_FIELDS: tuple[str, ...] = ("compute_input", "compute_infer", "compute_output")


@dataclass(slots=True)
class _Duration:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.ns += round(seconds * 1e9)

    def as_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass(slots=True)
class _ModelVersionStats:
    last_inference_ms: int = 0
    inference_count: int = 0
    execution_count: int = 0
    infer: dict[str, _Duration] = field(
        default_factory=lambda: {f: _Duration() for f in INFER_STAT_FIELDS}
    )
    batches: dict[int, dict[str, _Duration]] = field(default_factory=dict)


class StatsAggregator:
    """Accumulates Triton-style statistics per (model, version); thread-safe."""

    def __init__(self, *, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._clock_ns = clock_ns
        self._lock = threading.Lock()
        self._stats: dict[tuple[str, str], _ModelVersionStats] = {}

    def _entry(self, model: str, version: str) -> _ModelVersionStats:
        key = (model, version)
        entry = self._stats.get(key)
        if entry is None:
            entry = self._stats[key] = _ModelVersionStats()
        return entry

    def record_request(
        self,
        model: str,
        version: str,
        *,
        ok: bool,
        duration_s: float,
        queue_s: float = 0.0,
        compute_s: float = 0.0,
        reason: str = "",
    ) -> None:
        """One finished request (``queue_s``/``compute_s`` only without a batcher's timing)."""
        with self._lock:
            entry = self._entry(model, version)
            entry.last_inference_ms = self._clock_ns() // 1_000_000
            entry.infer["success" if ok else "fail"].add(duration_s)
            if ok and (queue_s or compute_s):
                entry.infer["queue"].add(queue_s)
                entry.infer["compute_infer"].add(compute_s)

    def record_timing(self, model: str, version: str, *, queue_s: float, compute_s: float) -> None:
        """Queue and compute time of one executed request."""
        with self._lock:
            entry = self._entry(model, version)
            entry.infer["queue"].add(queue_s)
            entry.infer["compute_infer"].add(compute_s)

    def record_execution(
        self, model: str, version: str, *, batch_rows: int, compute_s: float
    ) -> None:
        """One successful execution of ``batch_rows`` rows."""
        with self._lock:
            entry = self._entry(model, version)
            entry.execution_count += 1
            entry.inference_count += batch_rows
            per_size = entry.batches.get(batch_rows)
            if per_size is None:
                per_size = entry.batches[batch_rows] = {f: _Duration() for f in BATCH_STAT_FIELDS}
            per_size["compute_infer"].add(compute_s)

    def set_pending(self, model: str, version: str, pending: int) -> None:
        """Triton's statistics have no queue-depth field; accepted for the recorder protocol."""

    def record_isolation(self, model: str, version: str) -> None:
        """Triton's statistics have no such field; accepted for the recorder protocol."""

    def snapshot(self, model: str | None = None, version: str | None = None) -> list[StatsDict]:
        """ModelStatistics dicts, optionally for one model and/or version, sorted by name."""
        with self._lock:
            items = sorted(self._stats.items())
            return [
                _to_dict(name, ver, entry)
                for (name, ver), entry in items
                if (model is None or name == model) and (version is None or ver == version)
            ]


#: The name the serving layer imports.
StatsBook = StatsAggregator


def _to_dict(name: str, version: str, entry: _ModelVersionStats) -> StatsDict:
    return {
        "name": name,
        "version": version,
        "last_inference": entry.last_inference_ms,
        "inference_count": entry.inference_count,
        "execution_count": entry.execution_count,
        "inference_stats": {f: entry.infer[f].as_dict() for f in INFER_STAT_FIELDS},
        "response_stats": {},
        "batch_stats": [
            {"batch_size": size, **{f: d[f].as_dict() for f in BATCH_STAT_FIELDS}}
            for size, d in sorted(entry.batches.items())
        ],
        "memory_usage": [],
    }


def empty_stats(name: str, version: str) -> StatsDict:
    """Statistics of a model version that has served nothing yet (Triton lists it anyway)."""
    return _to_dict(name, version, _ModelVersionStats())


def _add_duration(into: dict[str, int], other: dict[str, int] | None) -> None:
    if other:
        into["count"] += int(other.get("count", 0))
        into["ns"] += int(other.get("ns", 0))


def merge_stats(*snapshots: Iterable[StatsDict]) -> list[StatsDict]:
    """Sum ModelStatistics dicts from several replicas, per (name, version).

    Counts and durations add up, ``last_inference`` is the latest, ``batch_stats`` merge
    by batch size. Missing fields (e.g. from an older replica) count as zero.
    """
    merged: dict[tuple[str, str], StatsDict] = {}
    for snapshot in snapshots:
        for stats in snapshot:
            key = (str(stats["name"]), str(stats["version"]))
            into = merged.get(key)
            if into is None:
                into = merged[key] = empty_stats(*key)
            into["last_inference"] = max(
                int(into["last_inference"]), int(stats.get("last_inference", 0))
            )
            into["inference_count"] += int(stats.get("inference_count", 0))
            into["execution_count"] += int(stats.get("execution_count", 0))
            for f in INFER_STAT_FIELDS:
                _add_duration(into["inference_stats"][f], stats.get("inference_stats", {}).get(f))
            by_size = {b["batch_size"]: b for b in into["batch_stats"]}
            for batch in stats.get("batch_stats", []):
                size = int(batch["batch_size"])
                target = by_size.get(size)
                if target is None:
                    target = by_size[size] = {
                        "batch_size": size,
                        **{f: {"count": 0, "ns": 0} for f in BATCH_STAT_FIELDS},
                    }
                for f in BATCH_STAT_FIELDS:
                    _add_duration(target[f], batch.get(f))
            into["batch_stats"] = [by_size[s] for s in sorted(by_size)]
    return [merged[k] for k in sorted(merged)]


def statistics_response(model_stats: Iterable[StatsDict]) -> StatsDict:
    """The body of ``GET /v2/models[/name[/versions/v]]/stats``: ``{"model_stats": [...]}``."""
    return {"model_stats": list(model_stats)}
