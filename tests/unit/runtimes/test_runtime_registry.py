"""The runtime registry: table lookup by platform/backend, and load errors."""

from __future__ import annotations

import pytest
from runtime_models import linear_spec, write_linear_onnx

from rayfront.errors import RepositoryError
from rayfront.runtimes import (
    RUNTIMES,
    OnnxRuntime,
    Runtime,
    TensorRTRuntime,
    TorchScriptRuntime,
    load_runtime,
    runtime_class_for,
)


def test_registry_lists_every_triton_name_when_imported():
    assert {
        "onnxruntime_onnx": OnnxRuntime,
        "onnxruntime": OnnxRuntime,
        "tensorrt_plan": TensorRTRuntime,
        "tensorrt": TensorRTRuntime,
        "pytorch_libtorch": TorchScriptRuntime,
        "pytorch": TorchScriptRuntime,
    } == RUNTIMES
    assert all(issubclass(cls, Runtime) for cls in RUNTIMES.values())


@pytest.mark.parametrize(
    ("platform", "backend", "expected"),
    [
        ("onnxruntime_onnx", "", OnnxRuntime),
        ("", "onnxruntime", OnnxRuntime),
        ("pytorch_libtorch", "", TorchScriptRuntime),
        ("", "pytorch", TorchScriptRuntime),
        ("onnxruntime_onnx", "pytorch", OnnxRuntime),  # platform first
    ],
)
def test_runtime_class_for_uses_platform_then_backend_when_looking_up(platform, backend, expected):
    assert runtime_class_for(linear_spec(platform=platform, backend=backend)) is expected


def test_runtime_class_for_raises_repository_error_when_platform_unknown():
    with pytest.raises(
        RepositoryError,
        match=r"model 'linear': no runtime for platform 'tensorflow_savedmodel' / backend 'tf'; "
        r"rayfront serves platforms onnxruntime_onnx, pytorch_libtorch, tensorrt_plan",
    ):
        runtime_class_for(linear_spec(platform="tensorflow_savedmodel", backend="tf"))


def test_load_runtime_raises_repository_error_when_model_file_missing(tmp_path):
    vdir = tmp_path / "linear" / "3"
    vdir.mkdir(parents=True)
    with pytest.raises(
        RepositoryError, match=r"model 'linear' version 3: model.onnx not found in .*linear/3"
    ):
        load_runtime(linear_spec(), vdir)


def test_load_runtime_uses_default_model_filename_when_config_overrides_it(tmp_path):
    vdir = tmp_path / "linear" / "1"
    write_linear_onnx(vdir / "custom.onnx")
    spec = linear_spec().model_copy(update={"default_model_filename": "custom.onnx"})
    runtime = load_runtime(spec, vdir)
    assert runtime.describe()["runtime"] == "onnxruntime"
    runtime.close()
