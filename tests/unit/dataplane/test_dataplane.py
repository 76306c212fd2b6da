"""The data plane and registry with in-process backends (no Ray): routing, validation, reload."""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path

import numpy as np
import onnx
import onnx.helper as oh
import pytest
from onnx import TensorProto

from rayfront.errors import InvalidArgumentError, NotFoundError
from rayfront.ingress import Ingress, assemble
from rayfront.models import LocalModelLoader
from rayfront.protocol.types import InferRequest, RequestedOutput
from rayfront.repository.sidecar import Provenance
from rayfront.repository.writer import write_version
from rayfront.spec import DynamicBatching, ModelSpec, TensorSpec, VersionPolicy


def _scale_model(path: Path, factor: float) -> None:
    x = oh.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 2])
    y = oh.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 2])
    k = oh.make_node(
        "Constant", [], ["k"], value=oh.make_tensor("k", TensorProto.FLOAT, [], [factor])
    )
    mul = oh.make_node("Mul", ["x", "k"], ["y"])
    model = oh.make_model(
        oh.make_graph([k, mul], "scale", [x], [y]), opset_imports=[oh.make_opsetid("", 17)]
    )
    model.ir_version = 9
    onnx.save(model, path)


def _write(root: Path, tmp: Path, factor: float) -> None:
    spec = ModelSpec(
        name="scale",
        platform="onnxruntime_onnx",
        max_batch_size=4,
        inputs=(TensorSpec(name="x", datatype="FP32", dims=(2,)),),
        outputs=(TensorSpec(name="y", datatype="FP32", dims=(2,)),),
        dynamic_batching=DynamicBatching(
            preferred_batch_size=(4,), max_queue_delay_microseconds=100
        ),
        version_policy=VersionPolicy(kind="all"),
    )
    path = tmp / f"m{factor}.onnx"
    _scale_model(path, factor)
    prov = Provenance(
        source="test", created_at=datetime.datetime.now(datetime.UTC), exporter="external"
    )
    write_version(root, spec, {"model.onnx": path}, prov)


def _ingress(root: Path, token: str | None = "t") -> Ingress:
    return assemble(lambda recorder: LocalModelLoader(root, recorder), admin_token=token)


def _req(x: np.ndarray, version: str = "", **kw: object) -> InferRequest:
    return InferRequest(model_name="scale", inputs={"x": x}, model_version=version, **kw)


def test_dataplane_routes_latest_and_pins_when_versions_given(tmp_path: Path):
    root = tmp_path / "repo"
    _write(root, tmp_path, 2.0)
    _write(root, tmp_path, 3.0)

    async def scenario() -> None:
        ingress = _ingress(root)
        plane = ingress.dataplane
        await ingress.registry.load_all()
        x = np.ones((2, 2), np.float32)
        latest = await plane.infer(_req(x))
        assert latest.model_version == "2" and float(latest.outputs["y"][0, 0]) == 3.0
        pinned = await plane.infer(_req(x, version="1"))
        assert pinned.model_version == "1" and float(pinned.outputs["y"][0, 0]) == 2.0
        await plane.close()

    asyncio.run(scenario())


def test_dataplane_holds_new_version_at_zero_when_reloaded(tmp_path: Path):
    root = tmp_path / "repo"
    _write(root, tmp_path, 2.0)

    async def scenario() -> None:
        ingress = _ingress(root)
        plane = ingress.dataplane
        await ingress.registry.load_all()
        _write(root, tmp_path, 5.0)
        await ingress.registry.load_model("scale")
        x = np.ones((1, 2), np.float32)
        served = {(await plane.infer(_req(x))).model_version for _ in range(20)}
        assert served == {"1"}
        assert (await plane.infer(_req(x, version="2"))).outputs["y"][0, 0] == 5.0
        await plane.close()

    asyncio.run(scenario())


def test_dataplane_rejects_bad_requests_before_queueing_when_invalid(tmp_path: Path):
    root = tmp_path / "repo"
    _write(root, tmp_path, 2.0)

    async def scenario() -> None:
        ingress = _ingress(root)
        plane = ingress.dataplane
        await ingress.registry.load_all()
        with pytest.raises(NotFoundError, match="Request for unknown model: 'nope' is not found"):
            await plane.infer(InferRequest(model_name="nope", inputs={}))
        with pytest.raises(NotFoundError, match="'scale' version 7 is not found"):
            await plane.infer(_req(np.ones((1, 2), np.float32), version="7"))
        with pytest.raises(InvalidArgumentError, match="input 'x' of model 'scale'"):
            await plane.infer(_req(np.ones((1, 2), np.int64)))
        with pytest.raises(InvalidArgumentError, match="max_batch_size"):
            await plane.infer(_req(np.ones((5, 2), np.float32)))
        out = await plane.infer(_req(np.ones((1, 2), np.float32), outputs=[RequestedOutput("y")]))
        assert list(out.outputs) == ["y"]
        text = (await plane.metrics_text()).decode()
        assert 'nv_inference_request_failure{model="scale"' in text
        await plane.close()

    asyncio.run(scenario())


def test_registry_load_honours_config_override_and_names_failures_as_triton_does(tmp_path: Path):
    import json

    from rayfront.errors import UnavailableError

    root = tmp_path / "repo"
    _write(root, tmp_path, 2.0)

    async def scenario() -> None:
        ingress = _ingress(root)
        plane, registry = ingress.dataplane, ingress.registry
        await registry.load_all()
        assert registry.entry("scale").spec.max_batch_size == 4
        # Triton's override: the model's configuration as JSON, for this load only.
        override = {
            "name": "scale",
            "platform": "onnxruntime_onnx",
            "max_batch_size": 2,
            "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [2]}],
            "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [2]}],
        }
        await registry.load_model("scale", config=json.dumps(override))
        assert registry.entry("scale").spec.max_batch_size == 2
        with pytest.raises(InvalidArgumentError, match="max_batch_size 2"):
            await plane.infer(_req(np.ones((3, 2), np.float32)))
        assert "max_batch_size: 4" in (root / "scale" / "config.pbtxt").read_text()

        with pytest.raises(InvalidArgumentError, match="failed to load 'scale': the 'config'"):
            await registry.load_model("scale", config="{not json")
        with pytest.raises(InvalidArgumentError, match="override names model 'other'"):
            await registry.load_model("scale", config=json.dumps({**override, "name": "other"}))
        with pytest.raises(NotFoundError, match="failed to load 'nope'"):
            await registry.load_model("nope")
        # The failed loads left the served model as it was.
        assert (await plane.infer(_req(np.ones((1, 2), np.float32)))).outputs["y"][0, 0] == 2.0

        # Ready: unknown is not found (404); known but not serving is not ready (503).
        assert await plane.model_ready("scale")
        with pytest.raises(NotFoundError, match="Request for unknown model: 'nope'"):
            await plane.model_ready("nope")
        with pytest.raises(NotFoundError, match="version 9 is not found"):
            await plane.model_ready("scale", "9")
        await registry.unload_model("scale")
        assert await plane.model_ready("scale") is False
        with pytest.raises((NotFoundError, UnavailableError)):
            await plane.infer(_req(np.ones((1, 2), np.float32)))
        await plane.close()

    asyncio.run(scenario())
