"""Server settings and the Serve config YAML that stock `serve run` deploys."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from rayfront.settings import AutoscalingSettings, ServerSettings
from rayfront.spec import InstanceGroup, ModelSpec, TensorSpec


def _spec(**kw: object) -> ModelSpec:
    return ModelSpec(
        name="m",
        platform="onnxruntime_onnx",
        max_batch_size=8,
        inputs=(TensorSpec(name="x", datatype="FP32", dims=(2,)),),
        outputs=(TensorSpec(name="y", datatype="FP32", dims=(2,)),),
        **kw,
    )


def test_settings_reject_unknown_fields_when_misspelled(tmp_path: Path):
    with pytest.raises(ValidationError, match="http_prot"):
        ServerSettings(repository=tmp_path, http_prot=1)  # type: ignore[call-arg]


def test_autoscaling_rejects_min_above_max_when_inverted():
    with pytest.raises(ValidationError, match="min_replicas"):
        AutoscalingSettings(min_replicas=3, max_replicas=2)


def test_autoscaling_comes_from_config_parameters_when_no_override(tmp_path: Path):
    spec = _spec(parameters={"rayfront.min_replicas": "2", "rayfront.max_replicas": "5"})
    auto = ServerSettings(repository=tmp_path).autoscaling_for(spec)
    assert (auto.min_replicas, auto.max_replicas) == (2, 5)


def test_serve_config_override_wins_when_given(tmp_path: Path):
    settings = ServerSettings.model_validate(
        {
            "repository": tmp_path,
            "models": {"m": {"autoscaling": {"min_replicas": 1, "max_replicas": 9}, "num_cpus": 2}},
        }
    )
    assert settings.autoscaling_for(_spec()).max_replicas == 9
    assert settings.resources_for(_spec()) == {"num_cpus": 2, "num_gpus": 0.0}


def test_gpu_instance_group_reserves_a_gpu_when_kind_gpu(tmp_path: Path):
    spec = _spec(instance_groups=(InstanceGroup(kind="KIND_GPU", count=2),))
    settings = ServerSettings(repository=tmp_path)
    assert settings.resources_for(spec)["num_gpus"] == 1.0
    # count is execution instances inside the replica (Triton), not replicas.
    assert settings.autoscaling_for(spec).min_replicas == 1


def test_gpu_instance_group_reserves_every_named_gpu_when_gpus_listed(tmp_path: Path):
    spec = _spec(instance_groups=(InstanceGroup(kind="KIND_GPU", count=2, gpus=(0, 1, 2)),))
    assert ServerSettings(repository=tmp_path).resources_for(spec)["num_gpus"] == 3.0
