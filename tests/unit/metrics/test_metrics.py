"""Prometheus metrics: Triton names, labels, explicit registry, valid exposition."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from rayfront.errors import (
    DeadlineExceededError,
    InternalError,
    InvalidArgumentError,
    UnavailableError,
)
from rayfront.metrics import InferenceRecorder, ModelMetrics, RecorderGroup, failure_reason
from rayfront.stats import StatsAggregator


def _families(metrics: ModelMetrics) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}


def test_render_uses_triton_counter_names_when_requests_are_recorded():
    m = ModelMetrics()
    m.record_request("digits", "1", ok=True, duration_s=0.002, queue_s=0.0005, compute_s=0.001)
    m.record_request("digits", "1", ok=True, duration_s=0.004, queue_s=0.0015, compute_s=0.001)
    m.record_request("digits", "1", ok=False, duration_s=0.001, reason="REJECTED")
    m.record_execution("digits", "1", batch_rows=5, compute_s=0.001)
    text = m.render().decode()

    assert "# TYPE nv_inference_request_success counter" in text
    assert '\nnv_inference_request_success{model="digits",version="1"} 2.0\n' in text
    assert 'nv_inference_request_failure{model="digits",reason="REJECTED",version="1"} 1.0' in text
    assert 'nv_inference_count{model="digits",version="1"} 5.0' in text
    assert 'nv_inference_exec_count{model="digits",version="1"} 1.0' in text
    assert "_total" not in "\n".join(line for line in text.splitlines() if "nv_inference" in line)
    assert m.counter("nv_inference_request_duration_us", model="digits", version="1") == (
        pytest.approx(7000)
    )
    assert m.counter("nv_inference_queue_duration_us", model="digits", version="1") == (
        pytest.approx(2000)
    )
    assert m.counter("nv_inference_compute_infer_duration_us", model="digits", version="1") == (
        pytest.approx(2000)
    )


def test_render_is_parseable_with_histograms_when_metrics_recorded():
    m = ModelMetrics()
    for i in range(10):
        m.record_request("enc", "2", ok=True, duration_s=0.001 * (i + 1), queue_s=0.0)
    m.record_execution("enc", "2", batch_rows=8, compute_s=0.01)
    m.set_pending("enc", "2", 3)
    families = _families(m)
    hist = families["rayfront_request_duration_seconds"]
    count = next(s for s in hist.samples if s.name.endswith("_count"))
    assert count.value == 10
    assert count.labels == {"model": "enc", "version": "2"}
    batch = families["rayfront_batch_size"]
    le8 = next(s for s in batch.samples if s.name.endswith("_bucket") and s.labels["le"] == "8.0")
    assert le8.value == 1
    pending = families["nv_inference_pending_request_count"]
    assert pending.samples[0].value == 3


def test_model_metrics_stays_off_global_registry_when_created_twice():
    a, b = ModelMetrics(), ModelMetrics()  # would raise "Duplicated timeseries" if global
    a.record_request("m", "1", ok=True, duration_s=0.001)
    assert b.counter("nv_inference_request_success", model="m", version="1") == 0
    assert (
        REGISTRY.get_sample_value("rayfront_batch_size_count", {"model": "m", "version": "1"})
        is None
    )


def test_model_metrics_uses_given_registry_when_one_is_passed():
    registry = CollectorRegistry()
    m = ModelMetrics(registry)
    m.record_execution("m", "1", batch_rows=2, compute_s=0.0)
    assert registry.get_sample_value("nv_inference_exec_count", {"model": "m", "version": "1"}) == 1


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (asyncio.CancelledError(), "CANCELED"),
        (DeadlineExceededError("late"), "REJECTED"),
        (UnavailableError("full"), "REJECTED"),
        (InvalidArgumentError("bad"), "OTHER"),
        (InternalError("boom"), "BACKEND"),
        (RuntimeError("boom"), "BACKEND"),
    ],
)
def test_failure_reason_maps_to_triton_reason_when_request_fails(exc, reason):
    assert failure_reason(exc) == reason


def test_recorder_group_fans_out_when_reporting_to_metrics_and_stats():
    metrics, stats = ModelMetrics(), StatsAggregator()
    group = RecorderGroup(metrics, stats)
    assert isinstance(group, InferenceRecorder)
    group.record_request("m", "1", ok=True, duration_s=0.001)
    group.record_timing("m", "1", queue_s=0.5, compute_s=0.25)
    group.record_execution("m", "1", batch_rows=3, compute_s=0.001)
    group.set_pending("m", "1", 0)
    assert metrics.counter("nv_inference_count", model="m", version="1") == 3
    assert stats.snapshot()[0]["inference_count"] == 3
    assert metrics.counter("nv_inference_queue_duration_us", model="m", version="1") == 500_000
    assert stats.snapshot()[0]["inference_stats"]["compute_infer"]["ns"] == 250_000_000
