"""The issue's performance goals: met, not met, or not measured with the reason."""

from __future__ import annotations

from pathlib import Path

from bench_helpers import make_point, make_target, mlp_result, sweep_result

from rayfront.benchmarks.analysis.goals import evaluate
from rayfront.benchmarks.analysis.results import ModelResult, RawPoint


def _cnn(rayfront_rps: float, p50: float, p99: float) -> ModelResult:
    return ModelResult(
        model="cnn",
        description="cnn",
        p99_bound_ms=2000,
        raw_status="ok",
        raw=[RawPoint(batch_size=8, calls=10, duration_s=1, rows_per_s=100.0)],
        targets=[make_target("rayfront-http", "32:1000", [make_point(64, rayfront_rps, p50, p99)])],
    )


def test_evaluate_reports_each_goal_when_all_inputs_measured(tmp_path: Path) -> None:
    checks = {
        g.name: g for g in evaluate(sweep_result(tmp_path, [mlp_result(), _cnn(97, 600, 700)]))
    }
    assert checks["batching-speedup"].status == "met"
    assert checks["batching-speedup"].value == 8000 / 2000
    assert checks["mlp-vs-bare"].value == 9000 / 7000  # best rayfront point is gRPC on
    assert checks["mlp-vs-serve"].status == "met"
    assert checks["grpc-vs-http"].value == 9000 / 8000
    assert checks["cnn-vs-raw"].status == "met" and checks["cnn-vs-raw"].value == 0.97
    assert checks["cnn-p99-over-p50"].value == 700 / 600
    assert checks["cnn-p99-over-p50"].status == "met"


def test_evaluate_marks_goal_not_met_when_ratio_misses(tmp_path: Path) -> None:
    checks = {
        g.name: g for g in evaluate(sweep_result(tmp_path, [mlp_result(), _cnn(50, 600, 900)]))
    }
    assert checks["cnn-vs-raw"].status == "not met"
    assert checks["cnn-p99-over-p50"].status == "not met"
    assert "p99 900.0 ms / p50 600.0 ms" in checks["cnn-p99-over-p50"].detail


def test_evaluate_says_not_measured_when_model_or_target_missing(tmp_path: Path) -> None:
    mlp = mlp_result()
    mlp.targets = [t for t in mlp.targets if t.target != "serve"]
    checks = {g.name: g for g in evaluate(sweep_result(tmp_path, [mlp]))}
    assert checks["cnn-vs-raw"].status == "not measured"
    assert checks["cnn-vs-raw"].detail == "model 'cnn' was not in this run"
    assert checks["mlp-vs-serve"].status == "not measured"
    assert "serve [-] not in the mlp results" in checks["mlp-vs-serve"].detail
    assert checks["mlp-vs-bare"].status == "met"


def test_evaluate_uses_highest_level_when_64_not_swept(tmp_path: Path) -> None:
    mlp = mlp_result()
    for t in mlp.targets:
        t.points = [p for p in t.points if p.concurrency == 1]
    checks = {g.name: g for g in evaluate(sweep_result(tmp_path, [mlp]))}
    assert "(concurrency 64 not swept; at 1)" in checks["mlp-vs-bare"].detail


def test_evaluate_names_failure_when_rayfront_failed_to_start(tmp_path: Path) -> None:
    mlp = mlp_result()
    mlp.targets = [
        t
        if not t.target.startswith("rayfront")
        else t.model_copy(
            update={"status": "failed", "points": [], "reason": "failed to start: boom\ntail"}
        )
        for t in mlp.targets
    ]
    checks = {g.name: g for g in evaluate(sweep_result(tmp_path, [mlp]))}
    assert checks["batching-speedup"].status == "not measured"
    assert checks["grpc-vs-http"].detail.startswith("no rayfront-http point")
