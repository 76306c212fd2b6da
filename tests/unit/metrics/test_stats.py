"""Triton ModelStatistics aggregation and merging across replicas."""

from __future__ import annotations

from google.protobuf import json_format
from tritonclient.grpc import service_pb2

from rayfront.stats import StatsAggregator, empty_stats, merge_stats, statistics_response


def _aggregator(now_ms: int) -> StatsAggregator:
    return StatsAggregator(clock_ns=lambda: now_ms * 1_000_000)


def test_snapshot_has_triton_shape_when_requests_recorded():
    s = _aggregator(1_700_000_000_000)
    s.record_request("digits", "1", ok=True, duration_s=0.003, queue_s=0.001, compute_s=0.002)
    s.record_request("digits", "1", ok=True, duration_s=0.005, queue_s=0.002, compute_s=0.002)
    s.record_request("digits", "1", ok=False, duration_s=0.001, reason="REJECTED")
    s.record_execution("digits", "1", batch_rows=2, compute_s=0.002)
    [snap] = s.snapshot()
    assert snap["name"] == "digits" and snap["version"] == "1"
    assert snap["last_inference"] == 1_700_000_000_000
    assert snap["inference_count"] == 2 and snap["execution_count"] == 1
    stats = snap["inference_stats"]
    assert stats["success"] == {"count": 2, "ns": 8_000_000}
    assert stats["fail"] == {"count": 1, "ns": 1_000_000}
    assert stats["queue"] == {"count": 2, "ns": 3_000_000}
    assert stats["compute_infer"] == {"count": 2, "ns": 4_000_000}
    assert stats["compute_input"] == {"count": 0, "ns": 0}
    assert snap["batch_stats"] == [
        {
            "batch_size": 2,
            "compute_input": {"count": 0, "ns": 0},
            "compute_infer": {"count": 1, "ns": 2_000_000},
            "compute_output": {"count": 0, "ns": 0},
        }
    ]


def test_record_timing_charges_queue_and_compute_when_batcher_reports():
    s = _aggregator(1)
    s.record_request("m", "1", ok=True, duration_s=0.004)
    s.record_timing("m", "1", queue_s=0.001, compute_s=0.002)
    stats = s.snapshot()[0]["inference_stats"]
    assert stats["success"] == {"count": 1, "ns": 4_000_000}
    assert stats["queue"] == {"count": 1, "ns": 1_000_000}
    assert stats["compute_infer"] == {"count": 1, "ns": 2_000_000}


def test_snapshot_parses_into_triton_grpc_proto_when_converted():
    s = _aggregator(5)
    s.record_request("m", "3", ok=True, duration_s=0.001, queue_s=0.0, compute_s=0.001)
    s.record_execution("m", "3", batch_rows=1, compute_s=0.001)
    response = json_format.ParseDict(
        statistics_response(s.snapshot()), service_pb2.ModelStatisticsResponse()
    )
    stats = response.model_stats[0]
    assert stats.name == "m" and stats.version == "3"
    assert stats.inference_stats.success.count == 1
    assert stats.batch_stats[0].batch_size == 1
    assert stats.batch_stats[0].compute_infer.ns == 1_000_000


def test_snapshot_filters_when_model_and_version_given():
    s = _aggregator(1)
    for model, version in [("a", "1"), ("a", "2"), ("b", "1")]:
        s.record_request(model, version, ok=True, duration_s=0.001)
    assert [(d["name"], d["version"]) for d in s.snapshot()] == [("a", "1"), ("a", "2"), ("b", "1")]
    assert [(d["name"], d["version"]) for d in s.snapshot("a")] == [("a", "1"), ("a", "2")]
    assert [(d["name"], d["version"]) for d in s.snapshot("a", "2")] == [("a", "2")]
    assert s.snapshot("zzz") == []


def test_merge_stats_sums_replicas_when_same_model_version():
    r1, r2 = _aggregator(100), _aggregator(200)
    for agg, rows in ((r1, 4), (r2, 8)):
        agg.record_request("m", "1", ok=True, duration_s=0.002, queue_s=0.001, compute_s=0.001)
        agg.record_execution("m", "1", batch_rows=rows, compute_s=0.001)
        agg.record_execution("m", "1", batch_rows=4, compute_s=0.001)
    r2.record_request("other", "1", ok=False, duration_s=0.001)
    merged = merge_stats(r1.snapshot(), r2.snapshot())
    assert [(d["name"], d["version"]) for d in merged] == [("m", "1"), ("other", "1")]
    m = merged[0]
    assert m["last_inference"] == 200
    assert m["inference_count"] == 4 + 4 + 8 + 4
    assert m["execution_count"] == 4
    assert m["inference_stats"]["success"] == {"count": 2, "ns": 4_000_000}
    assert [(b["batch_size"], b["compute_infer"]["count"]) for b in m["batch_stats"]] == [
        (4, 3),
        (8, 1),
    ]
    assert merged[1]["inference_stats"]["fail"]["count"] == 1


def test_merge_stats_treats_missing_fields_as_zero_when_replica_is_partial():
    partial = [{"name": "m", "version": "1", "inference_count": 3}]
    [merged] = merge_stats(partial, [empty_stats("m", "1")])
    assert merged["inference_count"] == 3
    assert merged["inference_stats"]["success"] == {"count": 0, "ns": 0}
