"""KServe v2 wire format for the benchmark clients and baselines, kept apart from the server's codec.

The benchmark must not share code with the thing it measures: a bug in rayfront's codec
should show up as errors here, not cancel out. So this module implements the small part
of the protocol the load generators and the bare baseline need, from the spec:

- HTTP with Triton's binary tensor extension: a JSON header of
  ``Inference-Header-Content-Length`` bytes, then the raw tensor bytes in input order
  (``binary_data_size`` per tensor); answers come back the same way when every output
  asks for ``binary_data``.
- gRPC ``ModelInferRequest`` with ``raw_input_contents`` (tritonclient's protobuf classes).

Only fixed-size numeric tensors are supported; the benchmark models have no BYTES inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from rayfront.dtypes import from_numpy, to_numpy
from rayfront.errors import InvalidArgumentError

TensorDict = dict[str, np.ndarray]

HEADER_LENGTH = "Inference-Header-Content-Length"
ROUTE_KEY_HEADER = "x-rayfront-route-key"
GRPC_INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"


def infer_path(model: str, version: str = "") -> str:
    """The KServe v2 infer path, version-pinned when ``version`` is given."""
    if version:
        return f"/v2/models/{model}/versions/{version}/infer"
    return f"/v2/models/{model}/infer"


def encode_infer_body(
    inputs: TensorDict, outputs: list[str] | None = None, parameters: dict[str, Any] | None = None
) -> tuple[bytes, int]:
    """Binary-extension request body and its JSON header length.

    Every requested output asks for ``binary_data`` so the answer skips JSON number
    formatting, which is what a performance-minded client does.
    """
    header: dict[str, Any] = {
        "inputs": [
            {
                "name": name,
                "shape": list(arr.shape),
                "datatype": from_numpy(arr.dtype),
                "parameters": {"binary_data_size": arr.nbytes},
            }
            for name, arr in inputs.items()
        ],
    }
    if outputs is not None:
        header["outputs"] = [{"name": n, "parameters": {"binary_data": True}} for n in outputs]
    else:
        header["parameters"] = {"binary_data_output": True}
    if parameters:
        header.setdefault("parameters", {}).update(parameters)
    head = orjson.dumps(header)
    blobs = [np.ascontiguousarray(a).tobytes() for a in inputs.values()]
    return head + b"".join(blobs), len(head)


def encode_shm_infer_body(
    inputs: list[tuple[str, str, list[int], str, int, int]],
    outputs: list[tuple[str, str, int, int]],
) -> bytes:
    """A JSON request whose tensors are in system shared memory (Triton's extension).

    ``inputs``: (name, datatype, shape, region, byte_size, offset); ``outputs``: (name,
    region, byte_size, offset). The body carries no tensor bytes at all.
    """
    doc: dict[str, Any] = {
        "inputs": [
            {
                "name": name,
                "datatype": datatype,
                "shape": shape,
                "parameters": {
                    "shared_memory_region": region,
                    "shared_memory_byte_size": size,
                    "shared_memory_offset": offset,
                },
            }
            for name, datatype, shape, region, size, offset in inputs
        ],
        "outputs": [
            {
                "name": name,
                "parameters": {
                    "shared_memory_region": region,
                    "shared_memory_byte_size": size,
                    "shared_memory_offset": offset,
                },
            }
            for name, region, size, offset in outputs
        ],
    }
    return orjson.dumps(doc)


def build_http_request(
    host: str,
    port: int,
    path: str,
    body: bytes,
    header_length: int | None,
    extra_headers: dict[str, str] | None = None,
) -> bytes:
    """A complete keep-alive HTTP/1.1 POST, built once and re-sent by the closed-loop client.

    ``header_length`` None sends a plain JSON body (no binary tensors follow it).
    """
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: "
        + ("application/json" if header_length is None else "application/octet-stream"),
        f"Content-Length: {len(body)}",
        *([] if header_length is None else [f"{HEADER_LENGTH}: {header_length}"]),
        "Connection: keep-alive",
    ]
    lines += [f"{k}: {v}" for k, v in (extra_headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass(slots=True)
class DecodedBody:
    """A decoded request or response: its JSON header plus numpy tensors by name."""

    header: dict[str, Any]
    tensors: TensorDict


def _decode_tensors(entries: list[dict[str, Any]], blob: memoryview, what: str) -> TensorDict:
    out: TensorDict = {}
    offset = 0
    for entry in entries:
        name = entry.get("name", "?")
        dtype = to_numpy(entry["datatype"])
        shape = tuple(int(d) for d in entry["shape"])
        params = entry.get("parameters") or {}
        if "binary_data_size" in params:
            size = int(params["binary_data_size"])
            if offset + size > len(blob):
                raise InvalidArgumentError(
                    f"{what} tensor {name!r}: binary_data_size {size} runs past the body "
                    f"({len(blob) - offset} bytes left)"
                )
            arr = np.frombuffer(blob[offset : offset + size], dtype=dtype)
            offset += size
        elif "data" in entry:
            arr = np.asarray(entry["data"], dtype=dtype)
        else:
            raise InvalidArgumentError(f"{what} tensor {name!r}: neither data nor binary_data_size")
        expected = int(np.prod(shape)) if shape else 1
        if arr.size != expected:
            raise InvalidArgumentError(
                f"{what} tensor {name!r}: {arr.size} elements for shape {list(shape)} "
                f"(expected {expected})"
            )
        out[name] = arr.reshape(shape)
    return out


def decode_body(body: bytes, header_length: int | None, what: str = "response") -> DecodedBody:
    """Decode a KServe v2 body, binary extension or plain JSON (``header_length`` None)."""
    view = memoryview(body)
    if header_length is None:
        header_length = len(body)
    if header_length > len(body):
        raise InvalidArgumentError(
            f"{HEADER_LENGTH} {header_length} is larger than the {what} body ({len(body)} bytes)"
        )
    header = orjson.loads(view[:header_length])
    key = "outputs" if what == "response" else "inputs"
    tensors = _decode_tensors(header.get(key) or [], view[header_length:], what)
    return DecodedBody(header=header, tensors=tensors)


def encode_response_body(model: str, version: str, outputs: TensorDict) -> tuple[bytes, int]:
    """Binary-extension response body (used by the bare ASGI and plain Serve baselines)."""
    header = {
        "model_name": model,
        "model_version": version,
        "outputs": [
            {
                "name": name,
                "datatype": from_numpy(arr.dtype),
                "shape": list(arr.shape),
                "parameters": {"binary_data_size": arr.nbytes},
            }
            for name, arr in outputs.items()
        ],
    }
    head = orjson.dumps(header)
    return head + b"".join(np.ascontiguousarray(a).tobytes() for a in outputs.values()), len(head)


def grpc_infer_request(
    model: str,
    inputs: TensorDict,
    version: str = "",
    route_key: str | None = None,
) -> bytes:
    """A serialized ``ModelInferRequest`` with raw tensor contents (sent as bytes, no re-encoding)."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=model, model_version=version)
    for name, arr in inputs.items():
        tensor = request.inputs.add()
        tensor.name = name
        tensor.datatype = from_numpy(arr.dtype)
        tensor.shape.extend(arr.shape)
        request.raw_input_contents.append(np.ascontiguousarray(arr).tobytes())
    if route_key is not None:
        request.parameters[ROUTE_KEY_HEADER].string_param = route_key
    return request.SerializeToString()


def grpc_decode_response(payload: bytes) -> TensorDict:
    """Output tensors of a serialized ``ModelInferResponse`` (raw contents only)."""
    from tritonclient.grpc import service_pb2

    response = service_pb2.ModelInferResponse.FromString(payload)
    if len(response.raw_output_contents) != len(response.outputs):
        raise InvalidArgumentError(
            f"gRPC response for model {response.model_name!r}: {len(response.outputs)} outputs "
            f"but {len(response.raw_output_contents)} raw_output_contents"
        )
    out: TensorDict = {}
    for meta, raw in zip(response.outputs, response.raw_output_contents, strict=True):
        arr = np.frombuffer(raw, dtype=to_numpy(meta.datatype))
        out[meta.name] = arr.reshape(tuple(meta.shape))
    return out
