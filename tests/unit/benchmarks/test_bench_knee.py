"""Knee finder and the batching/replica recommendation."""

from __future__ import annotations

from bench_helpers import make_point, make_target, mlp_result
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from rayfront.benchmarks.analysis.knee import (
    config_snippet,
    efficient_raw_batch,
    knee,
    recommend,
    serve_yaml_snippet,
)
from rayfront.benchmarks.run.sweep_config import BatchingSetting


def test_knee_picks_highest_throughput_when_p99_under_bound() -> None:
    points = [
        make_point(1, 100, p99=1),
        make_point(4, 300, p99=5),
        make_point(16, 500, p99=60),
        make_point(64, 450, p99=200),
    ]
    k = knee(points, p99_bound_ms=50)
    assert k is not None and k.concurrency == 4


def test_knee_skips_point_when_it_had_errors() -> None:
    points = [make_point(1, 100, p99=1), make_point(4, 300, p99=5, errors=2)]
    k = knee(points, 50)
    assert k is not None and k.concurrency == 1


def test_knee_is_none_when_no_point_meets_bound() -> None:
    assert knee([make_point(1, 100, p99=80)], 50) is None


def test_efficient_raw_batch_is_smallest_reaching_ninety_percent() -> None:
    eff = efficient_raw_batch(mlp_result().raw)
    assert eff is not None and eff.batch_size == 32


def test_recommend_picks_batching_setting_when_it_has_best_knee() -> None:
    rec = recommend(mlp_result())
    assert rec.feasible
    assert (rec.batching, rec.max_batch_size, rec.max_queue_delay_us, rec.replicas) == (
        "32:1000",
        32,
        1000,
        1,
    )
    assert rec.knee_target == "rayfront-grpc"
    assert rec.knee is not None and rec.knee.rows_per_s == 9000
    assert "max_batch_size: 32" in rec.config_pbtxt
    assert "min_replicas: 1" in rec.serve_yaml


def test_recommend_is_infeasible_when_bound_is_below_every_point() -> None:
    rec = recommend(mlp_result(), p99_ms=0.5)
    assert not rec.feasible
    assert any("no measured point" in n for n in rec.notes)
    assert rec.config_pbtxt == ""


def test_recommend_sizes_replicas_when_target_rps_given() -> None:
    rec = recommend(mlp_result(), target_rps=20_000, cpu_count=2)
    # 9000 req/s per replica measured -> 3 replicas, more than 2 cores: warned.
    assert rec.replicas == 3
    assert any("exceed this host's 2 cores" in n for n in rec.notes)
    assert "count: 3" in rec.config_pbtxt


def test_recommend_uses_batcher_when_rayfront_targets_failed() -> None:
    result = mlp_result()
    result.targets = [
        t.model_copy(update={"status": "failed", "points": []})
        for t in result.targets
        if t.target.startswith("rayfront")
    ]
    result.targets.append(make_target("batcher", "16:500", [make_point(4, 20_000, p99=3)]))
    rec = recommend(result)
    assert rec.feasible and rec.source.startswith("batcher")
    assert rec.max_batch_size == 16


def test_recommend_has_nothing_when_no_batched_target_ran() -> None:
    result = mlp_result()
    result.targets = [t for t in result.targets if not t.target.startswith("rayfront")]
    rec = recommend(result)
    assert not rec.feasible and rec.source == ""


def test_config_snippet_parses_as_model_config_when_batching_on_or_off() -> None:
    on = model_config_pb2.ModelConfig()
    text_format.Parse(config_snippet("mlp", BatchingSetting.parse("16:250:x2")), on)
    assert on.max_batch_size == 16
    assert on.dynamic_batching.max_queue_delay_microseconds == 250
    assert on.instance_group[0].count == 2
    off = model_config_pb2.ModelConfig()
    text_format.Parse(config_snippet("mlp", BatchingSetting.parse("off"), "KIND_GPU"), off)
    assert not off.HasField("dynamic_batching")
    assert off.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU


def test_serve_yaml_snippet_targets_rayfront_gateway_app() -> None:
    import yaml

    doc = yaml.safe_load(serve_yaml_snippet("mlp", 2))
    app = doc["applications"][0]
    assert app["import_path"] == "rayfront.deploy.app:build_gateway"
    assert app["args"]["models"]["mlp"]["autoscaling"] == {"min_replicas": 2, "max_replicas": 2}
