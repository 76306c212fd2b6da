"""Prometheus metrics for inference, in Triton's names, on an explicit registry.

Triton's per-model counters (``nv_inference_request_success``, ``nv_inference_count``,
``..._duration_us``) are kept under exactly Triton's names and labels (``model``,
``version``) so existing Triton dashboards work unchanged. Two histograms are rayfront's
own: request latency (for p99) and rows per execution.

Nothing here touches prometheus_client's global registry: every :class:`ModelMetrics`
owns (or is given) a :class:`~prometheus_client.CollectorRegistry`.

Reports go through the small :class:`InferenceRecorder` protocol, which both
:class:`ModelMetrics` and :class:`rayfront.stats.StatsAggregator` implement, split by who
knows what: the data plane reports each request's outcome and duration
(``record_request``); the batcher reports each executed request's queue and compute time
(``record_timing``), each execution's rows (``record_execution``) and the queue depth
(``set_pending``). :class:`RecorderGroup` fans one report out to several recorders.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from rayfront.errors import InvalidArgumentError, UnavailableError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Triton's failure reasons (``nv_inference_request_failure{reason=...}``).
REASON_REJECTED = "REJECTED"  # queue full, timed out in the queue, shutting down
REASON_CANCELED = "CANCELED"  # the client went away
REASON_BACKEND = "BACKEND"  # the runtime (or the hop to it) failed
REASON_OTHER = "OTHER"
FAILURE_REASONS: tuple[str, ...] = (REASON_REJECTED, REASON_CANCELED, REASON_BACKEND, REASON_OTHER)

# Latency buckets in seconds: sub-millisecond to 10 s, dense where this server lives
# (about 0.3-20 ms per request on 2 cores).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05,
    0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

_TRITON_COUNTERS: dict[str, str] = {
    "nv_inference_request_success": "Number of successful inference requests, all batch sizes",
    "nv_inference_request_failure": "Number of failed inference requests, all batch sizes",
    "nv_inference_count": "Number of inferences performed (rows; a batch-4 request counts 4)",
    "nv_inference_exec_count": "Number of model executions performed (batches)",
    "nv_inference_request_duration_us": "Cumulative inference request duration in microseconds",
    "nv_inference_queue_duration_us": "Cumulative inference queuing duration in microseconds",
    "nv_inference_compute_infer_duration_us": "Cumulative compute inference duration in microseconds",
}


def failure_reason(exc: BaseException) -> str:
    """Triton's failure reason for an exception that ended a request."""
    if isinstance(exc, asyncio.CancelledError):
        return REASON_CANCELED
    if isinstance(exc, UnavailableError):  # includes DeadlineExceededError
        return REASON_REJECTED
    if isinstance(exc, InvalidArgumentError):
        return REASON_OTHER
    return REASON_BACKEND


@runtime_checkable
class InferenceRecorder(Protocol):
    """What the batcher reports; implemented by ModelMetrics and StatsAggregator."""

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
        """One request finished (``ok``) or failed (``reason``: a Triton failure reason).

        Called by whoever sees the whole request (the data plane). ``queue_s`` and
        ``compute_s`` are for callers without a batcher; with one, the batcher reports
        them through :meth:`record_timing` and they stay 0 here.
        """

    def record_timing(self, model: str, version: str, *, queue_s: float, compute_s: float) -> None:
        """A request left the queue after ``queue_s`` and its batch computed for ``compute_s``."""

    def record_execution(
        self, model: str, version: str, *, batch_rows: int, compute_s: float
    ) -> None:
        """One successful execution of ``batch_rows`` rows that took ``compute_s``."""

    def set_pending(self, model: str, version: str, pending: int) -> None:
        """Requests waiting in the queue right now."""

    def record_isolation(self, model: str, version: str) -> None:
        """A failed batch was split to find the request that failed it."""


class RecorderGroup:
    """Fans every report out to several recorders (e.g. metrics and /stats)."""

    def __init__(self, *recorders: InferenceRecorder) -> None:
        self.recorders = recorders

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
        for r in self.recorders:
            r.record_request(
                model,
                version,
                ok=ok,
                duration_s=duration_s,
                queue_s=queue_s,
                compute_s=compute_s,
                reason=reason,
            )

    def record_timing(self, model: str, version: str, *, queue_s: float, compute_s: float) -> None:
        for r in self.recorders:
            r.record_timing(model, version, queue_s=queue_s, compute_s=compute_s)

    def record_execution(
        self, model: str, version: str, *, batch_rows: int, compute_s: float
    ) -> None:
        for r in self.recorders:
            r.record_execution(model, version, batch_rows=batch_rows, compute_s=compute_s)

    def set_pending(self, model: str, version: str, pending: int) -> None:
        for r in self.recorders:
            r.set_pending(model, version, pending)

    def record_isolation(self, model: str, version: str) -> None:
        for r in self.recorders:
            r.record_isolation(model, version)


class _TritonCounters(Collector):
    """Triton's counters, exposed under their exact names (no ``_total`` suffix).

    prometheus_client's Counter always appends ``_total``; Triton's metrics do not
    have it, and dashboards query the bare names, so the values live here.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[tuple[tuple[str, str], ...], float]] = {
            name: {} for name in _TRITON_COUNTERS
        }

    def inc(self, name: str, labels: tuple[tuple[str, str], ...], amount: float) -> None:
        with self._lock:
            family = self._values[name]
            family[labels] = family.get(labels, 0.0) + amount

    def value(self, name: str, labels: dict[str, str]) -> float:
        with self._lock:
            return self._values[name].get(tuple(sorted(labels.items())), 0.0)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            snapshot = {name: dict(v) for name, v in self._values.items()}
        for name, values in snapshot.items():
            metric = Metric(name, _TRITON_COUNTERS[name], "counter")
            for labels, value in sorted(values.items()):
                metric.add_sample(name, dict(labels), value)
            yield metric


class ReplicaGauge(Collector):
    """``rayfront_model_replicas{model,version}``: replicas running per served version.

    Read at scrape time from whatever the loader last learnt (``versions()`` yields
    (model, version, replicas or None)), so it can never disagree with readiness.
    """

    NAME = "rayfront_model_replicas"

    def __init__(self, versions: Callable[[], Iterable[tuple[str, str, int | None]]]) -> None:
        self._versions = versions

    def collect(self) -> Iterator[Metric]:
        metric = Metric(self.NAME, "Replicas running per model version", "gauge")
        for model, version, replicas in self._versions():
            if replicas is not None:
                metric.add_sample(self.NAME, {"model": model, "version": version}, replicas)
        yield metric


@dataclass(frozen=True)
class _Children:
    """The labelled metric children of one (model, version)."""

    request: Any
    queue: Any
    batch: Any
    pending: Any


class ModelMetrics:
    """Per-model inference metrics on an explicit registry.

    Thread-safe; one instance per process is enough (labels carry model and version).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._counters = _TritonCounters()
        self.registry.register(self._counters)
        self._request_duration = Histogram(
            "rayfront_request_duration_seconds",
            "Inference request latency from arrival at the batcher to result, in seconds",
            ("model", "version"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._queue_duration = Histogram(
            "rayfront_queue_duration_seconds",
            "Time a request waited in the batcher's queue, in seconds",
            ("model", "version"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._batch_size = Histogram(
            "rayfront_batch_size",
            "Rows per model execution (dynamic batch size)",
            ("model", "version"),
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self._pending = Gauge(
            "nv_inference_pending_request_count",
            "Instantaneous number of pending requests awaiting execution",
            ("model", "version"),
            registry=self.registry,
        )
        self._isolations = Counter(
            "rayfront_batch_isolations",
            "Failed batches split and re-run so that only the request that failed them fails",
            ("model", "version"),
            registry=self.registry,
        )
        # labels() costs a lock and a tuple build per call; on the hot path (several calls
        # per request) that was ~7% of the gateway's CPU, so keep each version's children.
        self._children: dict[tuple[str, str], _Children] = {}

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
        """Count one request; failures carry Triton's ``reason`` (default BACKEND).

        Pass ``queue_s``/``compute_s`` only when no batcher reports them through
        :meth:`record_timing`, or they are counted twice.
        """
        labels = (("model", model), ("version", version))
        if ok:
            self._counters.inc("nv_inference_request_success", labels, 1)
        else:
            failure = (*labels, ("reason", reason or REASON_BACKEND))
            self._counters.inc("nv_inference_request_failure", tuple(sorted(failure)), 1)
        self._counters.inc("nv_inference_request_duration_us", labels, duration_s * 1e6)
        self._child(model, version).request.observe(duration_s)
        if queue_s or compute_s:
            self.record_timing(model, version, queue_s=queue_s, compute_s=compute_s)

    def record_timing(self, model: str, version: str, *, queue_s: float, compute_s: float) -> None:
        """Queue wait and compute time of one executed request (Triton counts both per request)."""
        labels = (("model", model), ("version", version))
        self._counters.inc("nv_inference_queue_duration_us", labels, queue_s * 1e6)
        self._counters.inc("nv_inference_compute_infer_duration_us", labels, compute_s * 1e6)
        self._child(model, version).queue.observe(queue_s)

    def record_execution(
        self, model: str, version: str, *, batch_rows: int, compute_s: float
    ) -> None:
        """Count one execution of ``batch_rows`` rows (Triton: inference vs exec count)."""
        labels = (("model", model), ("version", version))
        self._counters.inc("nv_inference_exec_count", labels, 1)
        self._counters.inc("nv_inference_count", labels, batch_rows)
        self._child(model, version).batch.observe(batch_rows)

    def set_pending(self, model: str, version: str, pending: int) -> None:
        """Queue depth now (Triton's ``nv_inference_pending_request_count``)."""
        self._child(model, version).pending.set(pending)

    def record_isolation(self, model: str, version: str) -> None:
        """One failed batch split to isolate the request that failed it."""
        self._isolations.labels(model, version).inc()

    def _child(self, model: str, version: str) -> _Children:
        key = (model, version)
        children = self._children.get(key)
        if children is None:
            children = _Children(
                request=self._request_duration.labels(model, version),
                queue=self._queue_duration.labels(model, version),
                batch=self._batch_size.labels(model, version),
                pending=self._pending.labels(model, version),
            )
            self._children[key] = children
        return children

    def counter(self, name: str, **labels: str) -> float:
        """Current value of one Triton counter (for tests and the canary analysis)."""
        return self._counters.value(name, labels)

    def render(self) -> bytes:
        """The registry in Prometheus text format, Triton counters under their bare names."""
        text = generate_latest(self.registry)
        # generate_latest names every counter family `<name>_total` in HELP/TYPE lines;
        # our samples are bare, so align the metadata with them.
        for name in _TRITON_COUNTERS:
            text = text.replace(
                f"# HELP {name}_total ".encode(), f"# HELP {name} ".encode()
            ).replace(f"# TYPE {name}_total ".encode(), f"# TYPE {name} ".encode())
        return text
