"""Test doubles for the protocol tests: model specs and a numpy-backed fake DataPlane."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from rayfront.dtypes import to_config_enum
from rayfront.errors import NotFoundError, UnavailableError
from rayfront.protocol.checks import validate_request
from rayfront.protocol.http_server import HttpLimits
from rayfront.protocol.types import InferRequest, InferResponse
from rayfront.spec import ModelSpec, TensorSpec
from rayfront.tensors import as_array

ADMIN_TOKEN = "s3cret"
MAX_BODY = 1 << 20  # small caps so "too large" tests stay cheap
OFFLOAD = 64 << 10
HTTP_LIMITS = HttpLimits(
    max_header_bytes=16 << 10, header_timeout_s=1.0, body_timeout_s=1.0, max_body_bytes=MAX_BODY
)

ADD_SPEC = ModelSpec(
    name="add",
    platform="onnxruntime_onnx",
    max_batch_size=8,
    inputs=(
        TensorSpec(name="INPUT0", datatype="FP32", dims=(4,)),
        TensorSpec(name="INPUT1", datatype="FP32", dims=(4,)),
    ),
    outputs=(
        TensorSpec(name="OUTPUT0", datatype="FP32", dims=(4,)),
        TensorSpec(name="OUTPUT1", datatype="FP32", dims=(4,)),
    ),
)
UPPER_SPEC = ModelSpec(
    name="upper",
    platform="onnxruntime_onnx",
    max_batch_size=0,
    inputs=(TensorSpec(name="TEXT", datatype="BYTES", dims=(-1,)),),
    outputs=(TensorSpec(name="UPPER", datatype="BYTES", dims=(-1,)),),
)
SPECS = {s.name: s for s in (ADD_SPEC, UPPER_SPEC)}


def model_config(spec: ModelSpec) -> Any:
    cfg = mc.ModelConfig(name=spec.name, platform=spec.platform, max_batch_size=spec.max_batch_size)
    for t in spec.inputs:
        cfg.input.add(
            name=t.name, data_type=mc.DataType.Value(to_config_enum(t.datatype)), dims=t.dims
        )
    for t in spec.outputs:
        cfg.output.add(
            name=t.name, data_type=mc.DataType.Value(to_config_enum(t.datatype)), dims=t.dims
        )
    cfg.dynamic_batching.preferred_batch_size.extend([4, 8])
    cfg.dynamic_batching.max_queue_delay_microseconds = 100
    return cfg


class FakeDataPlane:
    """Models: ``add`` (FP32 sum/difference), ``upper`` (BYTES), ``echo`` (any tensors,
    unvalidated), ``boom`` (a bug), ``busy`` (unavailable), ``slow`` (waits for a release)."""

    def __init__(self) -> None:
        self.requests: list[InferRequest] = []
        self.admin_calls: list[tuple[str, str]] = []
        self.load_configs: list[str | None] = []
        self.slow_started = asyncio.Event()
        self.slow_release: asyncio.Event | None = None
        self.success = 0
        self.tracer = None

    async def live(self) -> bool:
        return True

    async def ready(self) -> bool:
        return True

    async def server_metadata(self) -> dict[str, Any]:
        return {"name": "rayfront", "version": "0.1.0", "extensions": ["binary_tensor_data"]}

    def _spec(self, name: str) -> ModelSpec:
        spec = SPECS.get(name)
        if spec is None:
            raise NotFoundError(f"unknown model '{name}'")
        return spec

    async def model_metadata(self, name: str, version: str = "") -> dict[str, Any]:
        spec = self._spec(name)
        tensors = lambda ts: [  # noqa: E731
            {
                "name": t.name,
                "datatype": t.datatype,
                "shape": list(t.full_shape(spec.max_batch_size)),
            }
            for t in ts
        ]
        return {
            "name": name,
            "versions": ["1"],
            "platform": spec.platform,
            "inputs": tensors(spec.inputs),
            "outputs": tensors(spec.outputs),
        }

    async def model_ready(self, name: str, version: str = "") -> bool:
        self._spec(name)
        return version in ("", "1")

    async def model_config(self, name: str, version: str = "") -> Any:
        return model_config(self._spec(name))

    async def statistics(self, name: str = "", version: str = "") -> dict[str, Any]:
        names = [name] if name else sorted(SPECS)
        for n in names:
            self._spec(n)
        return {
            "model_stats": [
                {
                    "name": n,
                    "version": version or "1",
                    "inference_count": self.success,
                    "execution_count": self.success,
                    "inference_stats": {"success": {"count": self.success, "ns": 1000}},
                }
                for n in names
            ]
        }

    async def repository_index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        return [{"name": n, "version": "1", "state": "READY", "reason": ""} for n in sorted(SPECS)]

    def _admin(self, op: str, name: str) -> None:
        self.admin_calls.append((op, name))
        self._spec(name)

    async def load_model(self, name: str, config: str | None = None) -> None:
        self._admin("load", name)
        self.load_configs.append(config)

    async def unload_model(self, name: str) -> None:
        self._admin("unload", name)

    async def metrics_text(self) -> bytes:
        return f'nv_inference_request_success{{model="add",version="1"}} {self.success}\n'.encode()

    async def infer(self, request: InferRequest) -> InferResponse:
        self.requests.append(request)
        name = request.model_name
        if name == "boom":
            raise RuntimeError("secret internal detail /etc/passwd")
        if name == "busy":
            raise UnavailableError("model 'busy' queue is full (8 waiting); retry later")
        if name == "slow":
            self.slow_started.set()
            assert self.slow_release is not None
            await self.slow_release.wait()
            outputs = {"OUT": np.zeros(1, np.float32)}
        elif name == "echo":
            outputs = {f"OUT_{k}": v for k, v in request.inputs.items()}
        else:
            spec = self._spec(name)
            validate_request(request, spec)
            if name == "add":
                # Shared-memory inputs arrive as file tensors, read where the batch is built.
                a, b = as_array(request.inputs["INPUT0"]), as_array(request.inputs["INPUT1"])
                outputs = {"OUTPUT0": a + b, "OUTPUT1": a - b}
            else:
                text = request.inputs["TEXT"]
                outputs = {"UPPER": np.array([t.upper() for t in text.tolist()], dtype=object)}
        self.success += 1
        return InferResponse(
            model_name=name, model_version=request.model_version or "1", outputs=outputs
        )
