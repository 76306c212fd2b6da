"""How the fast path is switched on: settings, deployment options, the in-flight meter."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from rayfront.deploy.autoscaling import POLICY_PATH
from rayfront.deploy.replica import InflightMeter
from rayfront.settings import ServerSettings
from rayfront.spec import ModelSpec, TensorSpec
from rayfront.transport.discovery import (
    endpoint_key,
    endpoint_prefix,
    sweep_stale_sockets,
    uds_path,
)


def _spec() -> ModelSpec:
    return ModelSpec(
        name="m",
        platform="onnxruntime_onnx",
        max_batch_size=8,
        inputs=(TensorSpec(name="x", datatype="FP32", dims=(2,)),),
        outputs=(TensorSpec(name="y", datatype="FP32", dims=(2,)),),
    )


def test_settings_default_to_fast_data_path_when_not_given(tmp_path: Path):
    assert ServerSettings(repository=tmp_path).data_path == "fast"


def test_settings_reject_data_path_when_unknown(tmp_path: Path):
    with pytest.raises(ValidationError, match="data_path"):
        ServerSettings(repository=tmp_path, data_path="grpc")  # type: ignore[arg-type]


def test_version_options_use_inflight_policy_when_fast_path_is_on(tmp_path: Path):
    from rayfront.deploy.version_app import version_options

    opts = version_options(ServerSettings(repository=tmp_path), _spec())
    assert opts["autoscaling_config"]["policy"] == {"policy_function": POLICY_PATH}


def test_version_options_keep_serve_default_policy_when_handle_path_is_chosen(tmp_path: Path):
    from rayfront.deploy.version_app import version_options

    opts = version_options(ServerSettings(repository=tmp_path, data_path="handle"), _spec())
    assert "policy" not in opts["autoscaling_config"]


def test_version_application_passes_data_path_when_built(tmp_path: Path):
    from rayfront.deploy.version_app import version_application

    app = version_application(ServerSettings(repository=tmp_path), _spec(), 3)
    bound = app._bound_deployment
    assert bound.init_args == (str(tmp_path), "m", 3)
    assert bound.init_kwargs == {"data_path": "fast"}
    assert bound._deployment_config.autoscaling_config.policy.policy_function == POLICY_PATH


def test_autoscaling_config_with_policy_survives_yaml_when_printed(tmp_path: Path):
    from ray.serve.config import AutoscalingConfig

    from rayfront.deploy.version_app import version_options

    opts = version_options(ServerSettings(repository=tmp_path), _spec())
    loaded = yaml.safe_load(yaml.safe_dump(opts["autoscaling_config"]))
    assert AutoscalingConfig(**loaded).policy.policy_function == POLICY_PATH


def test_endpoint_keys_share_the_app_prefix_when_listed():
    key = endpoint_key("rayfront--m--v1", "abc123")
    assert key.startswith(endpoint_prefix("rayfront--m--v1"))
    assert not key.startswith(endpoint_prefix("rayfront--m--v"))  # v1 is not v10's prefix
    assert not endpoint_key("rayfront--m--v10", "x").startswith(endpoint_prefix("rayfront--m--v1"))


def test_uds_path_fits_sun_path_when_app_name_is_long():
    path = uds_path("rayfront--" + "a-very-long-model-name" * 8 + "--v12", "abcdefgh")
    assert len(path.encode()) <= 107
    assert path.endswith("--v12-abcdefgh.sock")


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_inflight_meter_averages_over_time_when_batches_overlap():
    clock = _Clock()
    meter = InflightMeter(clock)
    meter.enter()  # 1 in flight for 1 s
    clock.now = 1.0
    meter.enter()  # 2 in flight for 1 s
    clock.now = 2.0
    meter.exit()
    meter.exit()  # 0 in flight for 2 s
    clock.now = 4.0
    avg, peak = meter.read()
    assert avg == pytest.approx(3.0 / 4.0)
    assert peak == 2


def test_inflight_meter_starts_new_interval_when_read():
    clock = _Clock()
    meter = InflightMeter(clock)
    meter.enter()
    clock.now = 1.0
    meter.read()
    clock.now = 3.0
    avg, peak = meter.read()
    assert (avg, peak) == (pytest.approx(1.0), 1)  # still one in flight, all interval long


def test_sweep_removes_only_old_dead_sockets_when_replica_starts():
    import os
    import socket
    import tempfile

    directory = tempfile.mkdtemp(prefix="rf-sweep-", dir="/tmp")
    dead, live, young = (os.path.join(directory, f"{n}.sock") for n in ("dead", "live", "young"))
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listening.bind(live)
    listening.listen(1)
    for path in (dead, young):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)  # bound, never listening: what a killed process leaves behind
        s.close()
    old = os.lstat(dead).st_mtime - 3600
    os.utime(dead, (old, old), follow_symlinks=False)
    os.utime(live, (old, old), follow_symlinks=False)
    try:
        assert sweep_stale_sockets(directory) == [dead]
        assert sorted(os.listdir(directory)) == ["live.sock", "young.sock"]
    finally:
        listening.close()
        for path in (live, young):
            os.unlink(path)
        os.rmdir(directory)
