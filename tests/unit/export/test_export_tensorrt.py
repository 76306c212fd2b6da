"""TensorRT: profile computation, availability check and stamping without TensorRT; the real
builder and runner under the `tensorrt` marker."""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest

from rayfront.errors import InputSpecError
from rayfront.export import tensorrt as trt_mod
from rayfront.export.specs import parse_input_spec, parse_trt_shape


def _specs(*texts):
    return [parse_input_spec(t) for t in texts]


def test_compute_profiles_uses_largest_preferred_as_opt_when_batching():
    profiles = trt_mod.compute_profiles(_specs("pixels:FP32:1,8,8"), 64, [16, 32])
    assert profiles == {"pixels": {"min": [1, 1, 8, 8], "opt": [32, 1, 8, 8], "max": [64, 1, 8, 8]}}


def test_compute_profiles_uses_max_batch_as_opt_when_no_preferred_sizes():
    profiles = trt_mod.compute_profiles(_specs("x:FP32:4"), 8)
    assert profiles["x"] == {"min": [1, 4], "opt": [8, 4], "max": [8, 4]}


def test_compute_profiles_takes_dynamic_dims_from_overrides_when_given():
    overrides = {
        "ids": parse_trt_shape("ids:1/128/256"),
        "img": parse_trt_shape("img:3,1/3,64/3,99"),
    }
    profiles = trt_mod.compute_profiles(_specs("ids:INT64:-1", "img:FP32:3,-1"), 16, [8], overrides)
    assert profiles["ids"] == {"min": [1, 1], "opt": [8, 128], "max": [16, 256]}
    assert profiles["img"] == {"min": [1, 3, 1], "opt": [8, 3, 64], "max": [16, 3, 99]}


def test_compute_profiles_omits_batch_dim_when_model_does_not_batch():
    profiles = trt_mod.compute_profiles(_specs("x:FP32:2,3"), 0)
    assert profiles["x"] == {"min": [2, 3], "opt": [2, 3], "max": [2, 3]}


def test_compute_profiles_raises_naming_the_dim_when_dynamic_dim_has_no_range():
    with pytest.raises(
        InputSpecError, match=r"input 'ids' dim 0 .* is dynamic .* --trt-shape ids:MIN/OPT/MAX"
    ):
        trt_mod.compute_profiles(_specs("x:FP32:4", "ids:INT64:-1"), 8)


def test_compute_profiles_raises_when_preferred_exceeds_max():
    with pytest.raises(
        InputSpecError, match=r"preferred batch size 16 is outside 1\.\.max_batch_size \(8\)"
    ):
        trt_mod.compute_profiles(_specs("x:FP32:4"), 8, [16])


def test_tensorrt_status_says_not_installed_when_package_missing(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorrt" else real(name, *a)
    )
    available, reason = trt_mod.tensorrt_status()
    assert not available
    assert reason.startswith("tensorrt not installed")


def test_tensorrt_status_says_no_gpu_when_cuda_unavailable(monkeypatch):
    import torch

    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert trt_mod.tensorrt_status() == (False, "no CUDA GPU (torch.cuda.is_available() is false)")


def test_tensorrt_status_reports_import_failure_when_stub_package_breaks(monkeypatch):
    import torch

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` raise
    available, reason = trt_mod.tensorrt_status()
    assert not available
    assert "tensorrt is installed but fails to import" in reason


def test_make_stamp_records_version_capability_and_profiles_when_built():
    profiles = {"x": {"min": [1, 4], "opt": [8, 4], "max": [8, 4]}}
    stamp = trt_mod.make_stamp(
        tensorrt_version="10.3.0",
        compute_capability=(9, 0),
        gpu_name="NVIDIA H100",
        fp16=True,
        profiles=profiles,
    )
    assert stamp.compute_capability == "9.0"
    assert stamp.tensorrt_version == "10.3.0"
    assert stamp.fp16 is True
    assert stamp.profiles == profiles


# --- real TensorRT (skipped without the package and a GPU) -------------------------------


@pytest.mark.tensorrt
def test_build_plan_runs_with_parity_when_tensorrt_present(tmp_path):
    import torch

    from rayfront.export.onnx_export import export_onnx
    from rayfront.export.parity import check_parity, make_cases, torch_runner

    specs = _specs("x:FP32:4")
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()).eval()
    exported = export_onnx(
        model,
        model_name="t",
        inputs=specs,
        output_names=["y"],
        max_batch_size=8,
        out_dir=tmp_path / "onnx",
    )
    profiles = trt_mod.compute_profiles(specs, 8, [4])
    stamp = trt_mod.build_plan(
        exported.path, tmp_path / "model.plan", model_name="t", profiles=profiles
    )
    assert stamp.profiles == profiles
    assert stamp.compute_capability == "{}.{}".format(*torch.cuda.get_device_capability(0))
    cases = make_cases(specs, 8)
    refs = [torch_runner(model, ["x"], ["y"])(c.feeds) for c in cases]
    records = check_parity(
        model_name="t",
        fmt="tensorrt",
        candidate=trt_mod.TensorRTRunner(tmp_path / "model.plan", ["y"]),
        cases=cases,
        references=refs,
        output_names=["y"],
        atol=1e-3,
        rtol=1e-3,
    )
    assert all(r.passed for r in records)


@pytest.mark.tensorrt
def test_export_model_writes_stamped_trt_sibling_when_tensorrt_on(tmp_path):
    from rayfront.export.pipeline import export_model
    from rayfront.export.request import ExportRequest
    from rayfront.repository.layout import Repository

    result = export_model(
        ExportRequest(
            model_ref="rayfront.export.demos.multi:factory",
            name="multi",
            inputs=["features:FP32:4", "ids:INT64:-1"],
            outputs=["scores", "nonzero"],
            max_batch_size=8,
            tensorrt="on",
            trt_shapes=["ids:1/4/16"],
            repository=tmp_path / "repo",
            progress=False,
        )
    )
    repo = Repository(tmp_path / "repo")
    assert repo.spec("multi_trt").platform == "tensorrt_plan"
    assert repo.spec("multi_trt").uses_gpu
    prov = repo.sidecar("multi_trt", 1)
    assert prov.tensorrt is not None and prov.tensorrt.profiles["ids"]["max"] == [8, 16]
    assert prov.parity and all(r.format == "tensorrt" and r.passed for r in prov.parity)
    assert result.versions["multi_trt"] == repo.version_dir("multi_trt", 1)
