"""Version readiness from Serve's status: replicas decide, not the app's transient status."""

from __future__ import annotations

from pathlib import Path

import pytest

from rayfront.deploy import ray_loader
from rayfront.deploy.ray_loader import RayModelLoader
from rayfront.errors import UnavailableError
from rayfront.models import ModelEntry, ServedVersion, require_ready
from rayfront.settings import ServerSettings
from rayfront.spec import ModelSpec, TensorSpec

SPEC = ModelSpec(
    name="m",
    platform="onnxruntime_onnx",
    max_batch_size=4,
    inputs=(TensorSpec(name="x", datatype="FP32", dims=(2,)),),
    outputs=(TensorSpec(name="y", datatype="FP32", dims=(2,)),),
)


@pytest.mark.parametrize(
    ("status", "running", "min_replicas", "ready", "accepting"),
    [
        ("RUNNING", 1, 1, True, False),
        # A controller recovering reports DEPLOYING over replicas that keep serving.
        ("DEPLOYING", 2, 1, True, False),
        # A crashed replica restarting: not ready, but requests wait (bounded) for it.
        ("UNHEALTHY", 0, 1, False, True),
        ("DEPLOYING", 0, 1, False, True),
        # Scaled to zero: ready; the first request wakes it.
        ("RUNNING", 0, 0, True, False),
        ("DEPLOY_FAILED", 0, 1, False, False),
        ("DELETING", 1, 1, False, False),
    ],
)
def test_refresh_sets_readiness_from_running_replicas(
    monkeypatch, tmp_path: Path, status, running, min_replicas, ready, accepting
):
    spec = SPEC.model_copy(update={"parameters": {"rayfront.min_replicas": str(min_replicas)}})
    loader = RayModelLoader(ServerSettings(repository=tmp_path))
    app = loader._settings.version_app_name("m", 1)
    monkeypatch.setattr(
        ray_loader,
        "_serve_status",
        lambda: {app: {"status": status, "message": "why", "running_replicas": running}},
    )
    sv = ServedVersion(version="1", queue=None)  # type: ignore[arg-type]
    entry = ModelEntry(name="m", spec=spec, versions={"1": sv})
    loader.refresh({"m": entry})
    assert (sv.ready, sv.accepting, sv.replicas) == (ready, accepting, running)
    if ready or accepting:
        require_ready(entry, "1", sv)
    else:
        with pytest.raises(UnavailableError, match="model 'm' version 1 is not ready: why"):
            require_ready(entry, "1", sv)
