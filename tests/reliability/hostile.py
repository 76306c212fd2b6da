"""Helpers for the reliability suite: raw HTTP and gRPC calls, and the "still right" check.

The hostile tests send what no well-behaved client library would: raw bytes over
``http.client``, protobuf messages built field by field over a bare gRPC channel. After
every case the server must still be live and still answer correctly.
"""

from __future__ import annotations

import http.client
import json
import struct
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2 as pb

GRPC_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


@dataclass
class HttpAnswer:
    status: int
    body: bytes
    headers: dict[str, str]

    @property
    def error(self) -> str:
        try:
            return str(json.loads(self.body).get("error", ""))
        except ValueError:
            return self.body.decode("utf-8", "replace")


def http_call(
    url: str,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout: float = 20.0,
) -> HttpAnswer:
    host, port = url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        if body or method == "POST":
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return HttpAnswer(resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()})
    finally:
        conn.close()


def json_body(inputs: list[dict[str, Any]], **extra: Any) -> bytes:
    return json.dumps({"inputs": inputs, **extra}).encode()


def binary_body(header: dict[str, Any], *blobs: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + b"".join(blobs), {
        "Inference-Header-Content-Length": str(len(head)),
        "Content-Type": "application/octet-stream",
    }


def bytes_elements(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


def grpc_call(url: str, method: str, message: Any, timeout: float = 20.0) -> tuple[str, str]:
    """(status code name, details) of one raw gRPC call; ``OK`` on success."""
    with grpc.insecure_channel(url, options=GRPC_OPTIONS) as channel:
        call = channel.unary_unary(
            f"/inference.GRPCInferenceService/{method}",
            request_serializer=lambda m: m if isinstance(m, bytes) else m.SerializeToString(),
            response_deserializer=lambda b: b,
        )
        try:
            call(message, timeout=timeout)
            return "OK", ""
        except grpc.RpcError as err:
            return err.code().name, err.details() or ""


def infer_request(model: str, *tensors: tuple[str, str, list[int]], **kw: Any) -> Any:
    msg = pb.ModelInferRequest(model_name=model, **kw)
    for name, datatype, shape in tensors:
        t = msg.inputs.add()
        t.name, t.datatype = name, datatype
        t.shape.extend(shape)
    return msg


def digits_pixels(seed: int, rows: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).random((rows, 1, 8, 8), dtype=np.float32)


def assert_still_right(server: Any, session: Any, seed: int = 0) -> None:
    """The server is live and answers a fresh digits request exactly as ONNX Runtime does,
    over HTTP and gRPC."""
    x = digits_pixels(seed)
    (want,) = session.run(["logits"], {"pixels": x})
    client = httpclient.InferenceServerClient(server.http_url, network_timeout=30)
    try:
        assert client.is_server_live()
        inp = httpclient.InferInput("pixels", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        got = client.infer("digits", [inp]).as_numpy("logits")
    finally:
        client.close()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    gclient = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        ginp = grpcclient.InferInput("pixels", list(x.shape), "FP32")
        ginp.set_data_from_numpy(x)
        np.testing.assert_allclose(
            gclient.infer("digits", [ginp]).as_numpy("logits"), want, rtol=1e-4, atol=1e-5
        )
    finally:
        gclient.close()
