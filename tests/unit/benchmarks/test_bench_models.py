"""Benchmark model table, export arguments and per-setting repository variants."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rayfront.benchmarks.run.bench_models import (
    MODELS,
    default_models,
    export_args,
    get_model,
    make_variant,
    model_file,
)
from rayfront.benchmarks.run.sweep_config import BatchingSetting
from rayfront.errors import FailedPreconditionError, InvalidArgumentError
from rayfront.repository.pbtxt import read_config, render_config
from rayfront.spec import DynamicBatching, ModelSpec, TensorSpec


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "mlp" / "1").mkdir(parents=True)
    (repo / "mlp" / "1" / "model.onnx").write_bytes(b"onnx bytes")
    spec = ModelSpec(
        name="mlp",
        platform="onnxruntime_onnx",
        max_batch_size=128,
        inputs=(TensorSpec(name="x", datatype="FP32", dims=(64,)),),
        outputs=(TensorSpec(name="logits", datatype="FP32", dims=(10,)),),
        dynamic_batching=DynamicBatching(
            preferred_batch_size=(64, 128), max_queue_delay_microseconds=500
        ),
    )
    (repo / "mlp" / "config.pbtxt").write_text(render_config(spec))
    return repo


def test_make_variant_writes_batching_when_setting_is_on(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    dst = make_variant(repo, "mlp", tmp_path / "v", BatchingSetting.parse("32:1000:x2"))
    spec = read_config(dst)
    assert spec.max_batch_size == 32
    assert spec.dynamic_batching is not None
    assert spec.dynamic_batching.max_queue_delay_microseconds == 1000
    assert spec.dynamic_batching.preferred_batch_size == ()
    # "x2" is two replicas (instance_group count is instances inside a replica).
    assert [(g.kind, g.count) for g in spec.instance_groups] == [("KIND_CPU", 1)]
    assert (
        spec.parameters["rayfront.min_replicas"] == spec.parameters["rayfront.max_replicas"] == "2"
    )
    # Model bytes are shared, not re-exported.
    assert os.path.samefile(dst / "1" / "model.onnx", repo / "mlp" / "1" / "model.onnx")


def test_make_variant_removes_dynamic_batching_when_setting_is_off(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    dst = make_variant(repo, "mlp", tmp_path / "v", BatchingSetting.parse("off"), device="cuda")
    spec = read_config(dst)
    assert spec.dynamic_batching is None
    assert spec.max_batch_size == 128  # clients may still send batched requests
    assert spec.instance_groups[0].kind == "KIND_GPU"
    assert "dynamic_batching" not in (dst / "config.pbtxt").read_text()


def test_make_variant_replaces_previous_copy_when_run_twice(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    make_variant(repo, "mlp", tmp_path / "v", BatchingSetting.parse("8:100"))
    dst = make_variant(repo, "mlp", tmp_path / "v", BatchingSetting.parse("16:100"))
    assert read_config(dst).max_batch_size == 16


def test_each_variant_keeps_its_own_config_when_several_are_made(tmp_path: Path) -> None:
    """A hard-linked config.pbtxt written through the link changed every variant at once:
    the "batching off" server once ran with batching on."""
    repo = _repo(tmp_path)
    source_text = (repo / "mlp" / "config.pbtxt").read_text()
    off = make_variant(repo, "mlp", tmp_path / "off", BatchingSetting.parse("off"))
    on = make_variant(repo, "mlp", tmp_path / "on", BatchingSetting.parse("64:1000"))
    assert read_config(off).dynamic_batching is None
    assert read_config(on).dynamic_batching is not None
    assert read_config(on).max_batch_size == 64
    assert (repo / "mlp" / "config.pbtxt").read_text() == source_text  # source untouched
    assert not os.path.samefile(off / "config.pbtxt", on / "config.pbtxt")


def test_model_file_raises_when_no_version_has_onnx(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    assert model_file(repo, "mlp") == repo / "mlp" / "1" / "model.onnx"
    with pytest.raises(FailedPreconditionError, match=r"model 'cnn': no version with model\.onnx"):
        model_file(repo, "cnn")


def test_export_args_leave_out_batch_dim_when_model_batches(tmp_path: Path) -> None:
    args = export_args(get_model("cnn"), tmp_path)
    assert args[:2] == ["export", "rayfront.benchmarks.run.torch_models:cnn"]
    assert args[args.index("--input") + 1] == "x:FP32:3,224,224"
    assert args[args.index("--max-batch-size") + 1] == "32"


def test_get_model_raises_when_name_unknown() -> None:
    with pytest.raises(
        InvalidArgumentError,
        match=r"unknown benchmark model 'bert'; expected one of \['cnn', 'mlp', 'resnet50'\]",
    ):
        get_model("bert")


def test_default_models_add_resnet50_when_device_is_cuda() -> None:
    assert default_models("cpu") == ["mlp", "cnn"]
    assert default_models("cuda") == ["mlp", "cnn", "resnet50"]
    assert all(m.gpu_p99_bound_ms < m.p99_bound_ms for m in MODELS.values())
