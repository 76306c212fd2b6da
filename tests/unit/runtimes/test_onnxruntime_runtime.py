"""ONNX Runtime runtime: real sessions on tiny graphs, providers, options, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from runtime_models import (
    linear_reference,
    linear_spec,
    write_linear_onnx,
    write_string_onnx,
)

from rayfront.errors import InvalidArgumentError, RepositoryError
from rayfront.runtimes import OnnxRuntime, load_runtime
from rayfront.runtimes.onnxruntime import (
    CPU_EP,
    CUDA_EP,
    TENSORRT_EP,
    OrtOptions,
    _session_options,
    select_providers,
)
from rayfront.spec import InstanceGroup, ModelSpec, TensorSpec


@pytest.fixture
def linear_dir(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    vdir = tmp_path / "linear" / "1"
    w, b = write_linear_onnx(vdir / "model.onnx")
    return vdir, w, b


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_onnx_runtime_matches_numpy_when_run_at_batch_size(linear_dir, batch):
    vdir, w, b = linear_dir
    runtime = load_runtime(linear_spec(), vdir)
    assert isinstance(runtime, OnnxRuntime)
    x = np.random.default_rng(batch).standard_normal((batch, 4)).astype(np.float32)
    out = runtime.infer({"x": x})
    expected = linear_reference(x, w, b)
    assert out.keys() == {"y", "z"}
    for name in ("y", "z"):
        assert out[name].dtype == np.float32
        np.testing.assert_allclose(out[name], expected[name], rtol=1e-5, atol=1e-5)


def test_onnx_runtime_returns_only_config_outputs_when_config_lists_a_subset(linear_dir):
    vdir, w, b = linear_dir
    runtime = load_runtime(linear_spec(outputs=("z",)), vdir)
    x = np.ones((2, 4), np.float32)
    out = runtime.infer({"x": x})
    assert list(out) == ["z"]
    np.testing.assert_allclose(out["z"], linear_reference(x, w, b)["z"], rtol=1e-5)


def test_onnx_runtime_converts_dtype_when_input_is_float64_or_strided(linear_dir):
    vdir, w, b = linear_dir
    runtime = load_runtime(linear_spec(), vdir)
    x = np.random.default_rng(1).standard_normal((3, 8))[:, ::2]  # float64, non-contiguous
    out = runtime.infer({"x": x})
    np.testing.assert_allclose(out["y"], linear_reference(x, w, b)["y"], rtol=1e-5, atol=1e-5)


def test_onnx_runtime_round_trips_bytes_when_model_has_string_tensors(tmp_path):
    vdir = tmp_path / "s" / "1"
    write_string_onnx(vdir / "model.onnx")
    spec = ModelSpec(
        name="s",
        platform="onnxruntime_onnx",
        max_batch_size=4,
        inputs=(TensorSpec(name="s", datatype="BYTES", dims=()),),
        outputs=(TensorSpec(name="out", datatype="BYTES", dims=()),),
    )
    runtime = load_runtime(spec, vdir)
    out = runtime.infer({"s": np.array([b"hello", "wörld".encode()], dtype=object)})
    assert out["out"].tolist() == [b"hello", "wörld".encode()]


def test_onnx_runtime_raises_invalid_argument_when_shape_is_wrong(linear_dir):
    vdir, _, _ = linear_dir
    runtime = load_runtime(linear_spec(), vdir)
    with pytest.raises(
        InvalidArgumentError, match=r"model 'linear': ONNX Runtime failed: .*dimensions.*x"
    ) as info:
        runtime.infer({"x": np.ones((2, 5), np.float32)})
    assert "[ONNXRuntimeError]" not in str(info.value)
    assert "\n" not in str(info.value)


def test_onnx_runtime_raises_invalid_argument_when_input_name_unknown(linear_dir):
    vdir, _, _ = linear_dir
    runtime = load_runtime(linear_spec(), vdir)
    with pytest.raises(InvalidArgumentError, match="model 'linear' has no input 'q'; expected x"):
        runtime.infer({"q": np.ones((1, 4), np.float32)})


def test_onnx_runtime_raises_invalid_argument_when_required_input_missing(linear_dir):
    vdir, _, _ = linear_dir
    runtime = load_runtime(linear_spec(), vdir)
    with pytest.raises(InvalidArgumentError, match="model 'linear': missing required input"):
        runtime.infer({})


def test_onnx_runtime_refuses_load_when_graph_differs_from_config(linear_dir):
    vdir, _, _ = linear_dir
    with pytest.raises(
        RepositoryError,
        match=r"model 'linear' version 1: model.onnx does not match config.pbtxt: .*input 'x'.*dim 1",
    ):
        load_runtime(linear_spec(in_dims=(5,)), vdir)


def test_onnx_runtime_refuses_gpu_group_when_no_gpu_provider(linear_dir, monkeypatch):
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: [CPU_EP])
    vdir, _, _ = linear_dir
    with pytest.raises(
        RepositoryError,
        match=r"instance_group KIND_GPU needs ONNX Runtime's CUDA or TensorRT execution provider.*allow_cpu_fallback=true",
    ):
        load_runtime(linear_spec(kind="KIND_GPU"), vdir)


def test_onnx_runtime_falls_back_to_cpu_when_gpu_group_allows_it(linear_dir, monkeypatch):
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: [CPU_EP])
    vdir, w, b = linear_dir
    spec = linear_spec(kind="KIND_GPU", parameters={"allow_cpu_fallback": "true"})
    runtime = load_runtime(spec, vdir)
    assert runtime.describe()["device"] == "CPU"
    x = np.ones((1, 4), np.float32)
    np.testing.assert_allclose(
        runtime.infer({"x": x})["y"], linear_reference(x, w, b)["y"], rtol=1e-5
    )


def _spec_with(kind: str) -> ModelSpec:
    return linear_spec(kind=kind)


def test_select_providers_orders_tensorrt_then_cuda_then_cpu_when_gpu_requested():
    providers, device = select_providers(
        _spec_with("KIND_GPU"), [TENSORRT_EP, CUDA_EP, CPU_EP], OrtOptions()
    )
    assert device == "GPU"
    assert [p[0] if isinstance(p, tuple) else p for p in providers] == [
        TENSORRT_EP,
        CUDA_EP,
        CPU_EP,
    ]
    assert providers[0][1]["trt_fp16_enable"] is False  # type: ignore[index]


def test_select_providers_skips_tensorrt_ep_when_parameter_disables_it():
    options = OrtOptions.from_spec(linear_spec(parameters={"tensorrt_ep": "false"}))
    providers, _ = select_providers(_spec_with("KIND_GPU"), [TENSORRT_EP, CUDA_EP, CPU_EP], options)
    assert [p[0] if isinstance(p, tuple) else p for p in providers] == [CUDA_EP, CPU_EP]


@pytest.mark.parametrize(
    ("kind", "available", "device"),
    [
        ("KIND_CPU", [CUDA_EP, CPU_EP], "CPU"),
        ("KIND_AUTO", [CPU_EP], "CPU"),
        ("KIND_AUTO", [CUDA_EP, CPU_EP], "GPU"),
        ("KIND_MODEL", [CUDA_EP, CPU_EP], "CPU"),
    ],
)
def test_select_providers_follows_instance_group_when_kind_is(kind, available, device):
    providers, got = select_providers(_spec_with(kind), available, OrtOptions())
    assert got == device
    assert providers[-1] == CPU_EP


def test_ort_options_parse_triton_parameters_when_given():
    spec = linear_spec(
        parameters={
            "intra_op_thread_count": "2",
            "inter_op_thread_count": "1",
            "execution_mode": "1",
            "graph_optimization_level": "basic",
            "enable_mem_pattern": "0",
            "session.use_env_allocators": "1",
            "autoscaling.max_replicas": "4",  # someone else's parameter: ignored
        }
    )
    options = OrtOptions.from_spec(spec)
    assert options.intra_op_threads == 2 and options.inter_op_threads == 1
    assert options.execution_mode == "parallel"
    assert options.graph_optimization_level == "basic"
    assert options.enable_mem_pattern is False
    assert options.allow_spinning is False
    assert options.config_entries == {"session.use_env_allocators": "1"}


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "intra_op_thread_count",
            "many",
            "parameter 'intra_op_thread_count' is 'many'; expected an integer >= 0",
        ),
        (
            "enable_mem_pattern",
            "maybe",
            "parameter 'enable_mem_pattern' is 'maybe'; expected true/false",
        ),
        ("graph_optimization_level", "max", "expected one of disable, basic, extended, all"),
        ("execution_mode", "2", "expected sequential or parallel"),
    ],
)
def test_ort_options_raise_repository_error_when_parameter_is_invalid(key, value, message):
    with pytest.raises(RepositoryError, match=message):
        OrtOptions.from_spec(linear_spec(parameters={key: value}))


def test_session_options_turn_spinning_off_when_parameter_unset():
    import onnxruntime as ort

    so = _session_options(ort, OrtOptions(intra_op_threads=1))
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert so.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    assert so.intra_op_num_threads == 1


def test_session_options_let_explicit_entry_win_when_session_parameter_given():
    import onnxruntime as ort

    options = OrtOptions(config_entries={"session.intra_op.allow_spinning": "1"})
    so = _session_options(ort, options)
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert so.get_session_config_entry("session.inter_op.allow_spinning") == "0"


def test_onnx_runtime_serves_torch_exported_linear_when_batch_is_dynamic(tmp_path):
    import torch

    torch.manual_seed(0)
    module = torch.nn.Linear(4, 3).eval()
    vdir = tmp_path / "lin" / "1"
    vdir.mkdir(parents=True)
    with pytest.warns(DeprecationWarning):  # the legacy exporter is quick and enough here
        torch.onnx.export(
            module,
            (torch.randn(2, 4),),
            str(vdir / "model.onnx"),
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
            dynamo=False,
        )
    runtime = load_runtime(linear_spec("lin", outputs=("y",)), vdir)
    for batch in (1, 5):
        x = torch.randn(batch, 4)
        with torch.no_grad():
            expected = module(x).numpy()
        np.testing.assert_allclose(
            runtime.infer({"x": x.numpy()})["y"], expected, rtol=1e-5, atol=1e-6
        )


@pytest.mark.gpu
def test_onnx_runtime_runs_on_cuda_when_gpu_provider_available(linear_dir):
    import onnxruntime

    if CUDA_EP not in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed (no CUDAExecutionProvider)")
    vdir, w, b = linear_dir
    runtime = load_runtime(linear_spec(kind="KIND_GPU", parameters={"tensorrt_ep": "false"}), vdir)
    assert runtime.describe()["device"] == "GPU"
    x = np.ones((4, 4), np.float32)
    np.testing.assert_allclose(
        runtime.infer({"x": x})["y"], linear_reference(x, w, b)["y"], rtol=1e-4
    )


def test_instance_group_gpu_ids_do_not_change_device_index_when_set():
    spec = ModelSpec(
        name="g",
        platform="onnxruntime_onnx",
        inputs=(TensorSpec(name="x", datatype="FP32", dims=(4,)),),
        outputs=(TensorSpec(name="y", datatype="FP32", dims=(3,)),),
        instance_groups=(InstanceGroup(kind="KIND_GPU", gpus=(3,)),),
    )
    providers, _ = select_providers(spec, [CUDA_EP, CPU_EP], OrtOptions())
    assert providers[0] == (CUDA_EP, {"device_id": 0})  # Ray: the replica's GPU is device 0
