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


def test_unplaceable_version_refuses_at_once_until_its_replica_runs(monkeypatch, tmp_path: Path):
    loader = RayModelLoader(ServerSettings(repository=tmp_path))
    app = loader._settings.version_app_name("m", 1)
    loader._pending[app] = "waiting for a GPU: each replica needs 1 and the Ray cluster has 0"
    status = {app: {"status": "DEPLOYING", "message": "", "running_replicas": 0}}
    monkeypatch.setattr(ray_loader, "_serve_status", lambda: status)
    sv = ServedVersion(version="1", queue=None)  # type: ignore[arg-type]
    entry = ModelEntry(name="m", spec=SPEC, versions={"1": sv})
    loader.refresh({"m": entry})
    assert (sv.ready, sv.accepting, sv.failed) == (False, False, True)
    with pytest.raises(UnavailableError, match="waiting for a GPU"):
        require_ready(entry, "1", sv)
    status[app]["running_replicas"] = 1  # a GPU node joined
    loader.refresh({"m": entry})
    assert (sv.ready, sv.failed) == (True, False)
    assert app not in loader._pending


@pytest.mark.parametrize("strict", [False, True])
def test_server_readiness_ignores_failed_models_unless_strict(strict):
    import asyncio

    from rayfront.dataplane import ServingDataPlane

    class Registry:
        def __init__(self) -> None:
            good = ServedVersion(version="1", queue=None)  # type: ignore[arg-type]
            stuck = ServedVersion(version="1", queue=None, ready=False, failed=True)  # type: ignore[arg-type]
            self.models = {
                "good": ModelEntry(name="good", spec=SPEC, versions={"1": good}),
                "gpu": ModelEntry(name="gpu", spec=SPEC, versions={"1": stuck}),
            }

        def failed_models(self) -> dict[str, str]:
            return {"broken": "not a valid ONNX file"}

    dp = ServingDataPlane.__new__(ServingDataPlane)
    dp.registry, dp.draining, dp.strict_readiness = Registry(), False, strict  # type: ignore[assignment]
    assert asyncio.run(dp.ready()) is (not strict)
