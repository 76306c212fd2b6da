"""How a version's Serve application is built: deployment options, engine settings, policy."""

from __future__ import annotations

from pathlib import Path

import yaml

from rayfront.deploy.autoscaling import POLICY_PATH
from rayfront.settings import ServerSettings
from rayfront.spec import InstanceGroup, ModelSpec, TensorSpec


def _spec(**kw: object) -> ModelSpec:
    return ModelSpec(
        name="m",
        platform="onnxruntime_onnx",
        max_batch_size=8,
        inputs=(TensorSpec(name="x", datatype="FP32", dims=(2,)),),
        outputs=(TensorSpec(name="y", datatype="FP32", dims=(2,)),),
        **kw,  # type: ignore[arg-type]
    )


def test_version_options_use_queue_policy_when_built(tmp_path: Path):
    from rayfront.deploy.version_app import version_options

    opts = version_options(ServerSettings(repository=tmp_path), _spec())
    assert opts["autoscaling_config"]["policy"] == {"policy_function": POLICY_PATH}
    # Handle calls queue in the replica's batcher like transport requests: never a cap
    # below a batch.
    assert opts["max_ongoing_requests"] >= 8


def test_version_application_passes_engine_and_transport_settings_when_built(tmp_path: Path):
    from rayfront.deploy.version_app import version_application

    settings = ServerSettings(
        repository=tmp_path, batches_in_flight_per_instance=3, transport_tcp="never"
    )
    app = version_application(settings, _spec(), 3)
    bound = app._bound_deployment
    assert bound.init_args == (str(tmp_path), "m", 3)
    assert bound.init_kwargs == {"engine": {"depth": 3}, "tcp": "never", "telemetry": "rayfront"}
    assert bound._deployment_config.autoscaling_config.policy.policy_function == POLICY_PATH


def test_gpu_replica_reserves_the_gpus_its_instance_group_names_when_built(tmp_path: Path):
    from rayfront.deploy.version_app import version_options

    settings = ServerSettings(repository=tmp_path)
    spec = _spec(instance_groups=(InstanceGroup(kind="KIND_GPU", count=3, gpus=(0, 1)),))
    opts = version_options(settings, spec)
    assert opts["ray_actor_options"]["num_gpus"] == 2.0
    # count is execution instances inside each replica (Triton), not a replica count.
    assert opts["autoscaling_config"]["min_replicas"] == 1


def test_autoscaling_config_with_policy_survives_yaml_when_printed(tmp_path: Path):
    from ray.serve.config import AutoscalingConfig

    from rayfront.deploy.version_app import version_options

    opts = version_options(ServerSettings(repository=tmp_path), _spec())
    loaded = yaml.safe_load(yaml.safe_dump(opts["autoscaling_config"]))
    assert AutoscalingConfig(**loaded).policy.policy_function == POLICY_PATH


def test_gateway_retire_callback_schedules_on_its_loop_when_called_from_a_thread():
    """The canary controller judges in a worker thread; a promotion's retirement must still
    run (``asyncio.get_running_loop()`` there raised and the old version kept its replicas)."""
    import asyncio
    import threading
    from types import SimpleNamespace

    from rayfront.deploy.gateway import Gateway

    retired: list[tuple[str, str]] = []

    class Registry:
        async def retire_version(self, model: str, version: str) -> None:
            retired.append((model, version))

    async def scenario() -> None:
        gw = Gateway.__new__(Gateway)
        gw._loop = asyncio.get_running_loop()
        gw._background = []
        gw.ingress = SimpleNamespace(registry=Registry())
        errors: list[BaseException] = []

        def judge() -> None:
            try:
                gw._on_retire("digits", "1", 0.0)
            except BaseException as exc:  # pragma: no cover - the bug this test guards
                errors.append(exc)

        thread = threading.Thread(target=judge)
        thread.start()
        thread.join()
        assert errors == []
        for _ in range(100):
            if retired:
                break
            await asyncio.sleep(0.01)
        assert retired == [("digits", "1")]

    asyncio.run(scenario())
