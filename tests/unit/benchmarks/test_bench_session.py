"""ONNX Runtime session setup shared by the baselines: providers, inputs, metadata, raw sweep."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench_helpers import tiny_mlp_repo

from rayfront.benchmarks.targets.raw import raw_sweep
from rayfront.benchmarks.targets.session import make_session, metadata, providers_for, random_inputs
from rayfront.errors import FailedPreconditionError


def test_providers_for_cpu_ignores_gpu_providers() -> None:
    assert providers_for("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CPUExecutionProvider"
    ]


def test_providers_for_cuda_orders_tensorrt_first_when_asked() -> None:
    available = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers_for("cuda", available) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers_for("cuda", available, tensorrt=True) == available


def test_providers_for_cuda_falls_back_to_cuda_when_tensorrt_missing() -> None:
    available = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers_for("cuda", available, tensorrt=True) == available


def test_providers_for_cuda_raises_when_cuda_provider_missing() -> None:
    with pytest.raises(
        FailedPreconditionError,
        match=r"needs onnxruntime's CUDAExecutionProvider.*install onnxruntime-gpu",
    ):
        providers_for("cuda", ["CPUExecutionProvider"])


def test_session_helpers_describe_model_when_opened(tmp_path: Path) -> None:
    repo = tiny_mlp_repo(tmp_path)
    session = make_session(repo / "mlp" / "1" / "model.onnx")
    feeds = random_inputs(session, 3)
    assert feeds["x"].shape == (3, 64)
    assert session.run(None, feeds)[0].shape == (3, 10)
    meta = metadata(session, "mlp")
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}]
    assert meta["outputs"][0]["name"] == "logits"


def test_raw_sweep_reports_each_batch_when_timed(tmp_path: Path) -> None:
    repo = tiny_mlp_repo(tmp_path)
    done: list[int] = []
    points = raw_sweep(repo / "mlp" / "1" / "model.onnx", [1, 8], 0.05, on_batch_done=done.append)
    assert [p.batch_size for p in points] == [1, 8] == done
    for p in points:
        assert p.calls >= 3 and p.rows_per_s > 0
        assert p.latency is not None and p.latency.p50_ms > 0


@pytest.mark.gpu
def test_raw_sweep_runs_on_cuda_when_onnxruntime_gpu_present(tmp_path: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu (CUDAExecutionProvider) is not installed")
    repo = tiny_mlp_repo(tmp_path)
    session = make_session(repo / "mlp" / "1" / "model.onnx", device="cuda")
    assert session.get_providers()[0] == "CUDAExecutionProvider"
    points = raw_sweep(repo / "mlp" / "1" / "model.onnx", [1, 32], 0.05, device="cuda")
    assert all(p.rows_per_s > 0 for p in points)
