"""The bare ASGI baseline app, called directly as ASGI with a fake ONNX Runtime session."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from rayfront.benchmarks.load import wire
from rayfront.benchmarks.targets.bare_asgi import BareApp


@dataclass
class _Meta:
    name: str
    type: str
    shape: list[Any]


class FakeSession:
    """Doubles its input; enough of InferenceSession for the app."""

    def __init__(self) -> None:
        self.calls = 0

    def get_inputs(self) -> list[_Meta]:
        return [_Meta("x", "tensor(float)", ["batch", 4])]

    def get_outputs(self) -> list[_Meta]:
        return [_Meta("y", "tensor(float)", ["batch", 4])]

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.calls += 1
        return [feeds["x"] * 2]


def _call(
    app: BareApp,
    method: str,
    path: str,
    body: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict[str, Any]] = []
    chunks = [body[: len(body) // 2], body[len(body) // 2 :]]

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": headers or []}
    asyncio.run(app(scope, receive, send))
    start, body_msg = sent
    return start["status"], dict(start["headers"]), body_msg["body"]


def test_bare_app_infers_when_request_is_binary_kserve() -> None:
    session = FakeSession()
    app = BareApp(session, "m")
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    body, head_len = wire.encode_infer_body({"x": x}, ["y"])
    status, headers, payload = _call(
        app,
        "POST",
        "/v2/models/m/infer",
        body,
        [(b"inference-header-content-length", str(head_len).encode())],
    )
    assert status == 200
    out = wire.decode_body(payload, int(headers[b"inference-header-content-length"]))
    np.testing.assert_array_equal(out.tensors["y"], x * 2)
    assert session.calls == 1


def test_bare_app_answers_400_when_input_missing() -> None:
    app = BareApp(FakeSession(), "m")
    body, head_len = wire.encode_infer_body({"z": np.zeros((1, 4), np.float32)}, ["y"])
    status, _, payload = _call(
        app,
        "POST",
        "/v2/models/m/versions/1/infer",
        body,
        [(b"inference-header-content-length", str(head_len).encode())],
    )
    assert status == 400
    assert "x" in orjson.loads(payload)["error"]


def test_bare_app_serves_health_and_metadata_when_asked() -> None:
    app = BareApp(FakeSession(), "m")
    assert _call(app, "GET", "/v2/health/ready")[0] == 200
    status, _, payload = _call(app, "GET", "/v2/models/m")
    meta = orjson.loads(payload)
    assert status == 200
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert _call(app, "GET", "/v2/models/other/ready")[0] == 404
