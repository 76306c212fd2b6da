"""Builders for benchmark unit tests: synthetic sweep results, no servers."""

from __future__ import annotations

from pathlib import Path

from rayfront.benchmarks.analysis.results import (
    LatencySummary,
    ModelResult,
    Point,
    RawPoint,
    RunMeta,
    SweepResult,
    TargetResult,
)
from rayfront.benchmarks.run.sweep_config import BatchingSetting, SweepConfig


def make_point(
    c: int, rps: float, p50: float = 1.0, p99: float = 2.0, errors: int = 0, rows: int = 1
) -> Point:
    return Point(
        concurrency=c,
        request_batch=rows,
        duration_s=1.0,
        requests=int(rps),
        errors=errors,
        req_per_s=rps,
        rows_per_s=rps * rows,
        latency=LatencySummary(
            p50_ms=p50, p90_ms=(p50 + p99) / 2, p99_ms=p99, mean_ms=p50, max_ms=p99 * 2
        ),
    )


def make_target(
    target: str, batching: str, points: list[Point], status: str = "ok", reason: str = ""
) -> TargetResult:
    return TargetResult(
        target=target, batching=batching, status=status, reason=reason, points=points
    )  # type: ignore[arg-type]


def make_config(tmp: Path, **kw: object) -> SweepConfig:
    base: dict[str, object] = {
        "models": ("mlp",),
        "targets": ("raw", "bare", "serve", "rayfront-http", "rayfront-grpc"),
        "concurrency": (1, 64),
        "batching": (BatchingSetting.parse("off"), BatchingSetting.parse("32:1000")),
        "duration_s": 1.0,
        "warmup_s": 0.1,
        "out": tmp,
    }
    base.update(kw)
    return SweepConfig.model_validate(base)


def mlp_result() -> ModelResult:
    """A plausible mlp run: rayfront batching on beats off, bare and serve."""
    return ModelResult(
        model="mlp",
        description="tiny MLP",
        p99_bound_ms=50.0,
        raw_status="ok",
        raw=[
            RawPoint(batch_size=1, calls=1000, duration_s=1, rows_per_s=100_000.0),
            RawPoint(batch_size=32, calls=1000, duration_s=1, rows_per_s=1_000_000.0),
            RawPoint(batch_size=64, calls=1000, duration_s=1, rows_per_s=1_050_000.0),
        ],
        targets=[
            make_target("bare", "", [make_point(1, 5000), make_point(64, 7000, 8, 12)]),
            make_target("serve", "", [make_point(1, 150, 6, 9), make_point(64, 400, 150, 300)]),
            make_target(
                "rayfront-http", "off", [make_point(1, 1000), make_point(64, 2000, 30, 40)]
            ),
            make_target(
                "rayfront-http", "32:1000", [make_point(1, 1100), make_point(64, 8000, 7, 9)]
            ),
            make_target(
                "rayfront-grpc", "off", [make_point(1, 1200), make_point(64, 2100, 30, 45)]
            ),
            make_target(
                "rayfront-grpc", "32:1000", [make_point(1, 1300), make_point(64, 9000, 6, 8)]
            ),
        ],
    )


def sweep_result(tmp: Path, models: list[ModelResult] | None = None) -> SweepResult:
    return SweepResult(
        meta=RunMeta(
            started_at="2026-01-01T00:00:00",
            host="test",
            cpu_count=2,
            platform="Linux x86_64",
            python="3.11",
            client="test client",
            config=make_config(tmp),
        ),
        models=models if models is not None else [mlp_result()],
    )


def tiny_mlp_repo(root: Path) -> Path:
    """A repository holding ``mlp`` as a one-layer ONNX graph built without torch.

    Same signature as the benchmark's mlp (``x`` FP32 [-1, 64] -> ``logits`` [-1, 10]), so
    the runner can use it via ``--repository`` without exporting anything.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from rayfront.repository.pbtxt import render_config
    from rayfront.spec import DynamicBatching, ModelSpec, TensorSpec

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((64, 10)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["logits"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    version_dir = root / "mlp" / "1"
    version_dir.mkdir(parents=True)
    onnx.save(model, str(version_dir / "model.onnx"))
    spec = ModelSpec(
        name="mlp",
        platform="onnxruntime_onnx",
        max_batch_size=64,
        inputs=(TensorSpec(name="x", datatype="FP32", dims=(64,)),),
        outputs=(TensorSpec(name="logits", datatype="FP32", dims=(10,)),),
        dynamic_batching=DynamicBatching(max_queue_delay_microseconds=100),
    )
    (root / "mlp" / "config.pbtxt").write_text(render_config(spec))
    return root
