"""The sweep plan (steps and planned seconds) and the progress tracker, without running anything."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench_helpers import make_config

from rayfront.benchmarks.load.closed_loop import LoopResult
from rayfront.benchmarks.run.bench_models import get_model
from rayfront.benchmarks.run.sweep import Tracker, plan, plan_model, raw_batches, to_point, workload


def test_plan_has_one_step_per_point_and_start_when_all_targets(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        targets=("raw", "batcher", "bare", "serve", "rayfront-http", "rayfront-grpc"),
        concurrency=(1, 4, 16),
    )
    steps = plan(cfg)
    # export + raw + batcher 2x(start+3) + bare (1+3) + serve (1+3) + rayfront 2x(start + 2x3)
    assert len(steps) == 1 + 1 + 2 * 4 + 4 + 4 + 2 * 7
    labels = [s.label for s in steps]
    assert labels[0] == "mlp: export"
    assert "mlp: rayfront-grpc [32:1000] c=16" in labels
    assert labels.index("mlp: start serve") < labels.index("mlp: start rayfront [off]")


def test_plan_skips_batched_steps_when_only_runtime_targets(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, targets=("raw",), models=("mlp", "cnn"))
    assert [s.label for s in plan(cfg)] == [
        "mlp: export",
        "mlp: raw session.run sweep",
        "cnn: export",
        "cnn: raw session.run sweep",
    ]
    assert len(plan_model(cfg, "cnn")) == 2


def test_raw_batches_are_trimmed_when_quick(tmp_path: Path) -> None:
    assert raw_batches(make_config(tmp_path, quick=True), get_model("mlp")) == (1, 8, 32)
    assert raw_batches(make_config(tmp_path, raw_batches=(2, 4)), get_model("cnn")) == (2, 4)
    assert raw_batches(make_config(tmp_path), get_model("cnn")) == get_model("cnn").raw_batches


def test_tracker_counts_steps_and_skips_to_index_when_model_fails(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, concurrency=(1,))
    steps = plan(cfg)
    tracker = Tracker(steps, progress=None)
    assert tracker.begin() == "mlp: export"
    tracker.end()
    tracker.skip_to(5)
    assert tracker.index == 5
    tracker.skip_to(10_000)
    assert tracker.index == len(steps)
    assert tracker.total_s == pytest.approx(sum(s.planned_s for s in steps))


def test_to_point_computes_rates_when_rows_per_request_above_one() -> None:
    loop = LoopResult(latencies_s=[0.01] * 50, errors=2, duration_s=2.0)
    p = to_point(loop, concurrency=4, rows=8)
    assert (p.requests, p.errors, p.req_per_s, p.rows_per_s) == (50, 2, 25.0, 200.0)
    assert p.latency is not None and p.latency.p50_ms == pytest.approx(10.0)


def test_workload_has_request_rows_when_built_for_model() -> None:
    work = workload(get_model("cnn"), 3)
    assert work.inputs["x"].shape == (3, 3, 224, 224)
    assert work.inputs["x"].dtype == "float32"
    assert work.rows == 3 and work.output == "logits"


def test_runner_marks_partial_targets_failed_when_interrupted(tmp_path: Path) -> None:
    from bench_helpers import make_point, make_target

    from rayfront.benchmarks.analysis.results import ModelResult
    from rayfront.benchmarks.run.sweep import Runner

    runner = Runner(make_config(tmp_path, concurrency=(1, 4)), show_progress=False)
    mr = ModelResult(model="mlp", description="d", p99_bound_ms=50)
    mr.targets = [
        make_target("bare", "", [make_point(1, 10), make_point(4, 20)]),
        make_target("serve", "", [make_point(1, 10)]),
    ]
    runner.result.models.append(mr)
    runner._mark_interrupted()
    assert [t.status for t in mr.targets] == ["ok", "failed"]
    assert mr.targets[1].reason == "interrupted after 1 of 2 concurrency levels"
    assert mr.raw_status == "failed"
