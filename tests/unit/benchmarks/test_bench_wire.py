"""The benchmark's own KServe v2 wire codec (binary HTTP extension and gRPC raw contents)."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from rayfront.benchmarks.load import wire
from rayfront.errors import InvalidArgumentError


def test_encode_infer_body_round_trips_when_decoded_as_request() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    ids = np.array([[1, 2], [3, 4], [5, 6]], dtype=np.int64)
    body, head_len = wire.encode_infer_body({"x": x, "ids": ids}, ["y"])
    header = orjson.loads(body[:head_len])
    assert header["outputs"] == [{"name": "y", "parameters": {"binary_data": True}}]
    decoded = wire.decode_body(body, head_len, "request")
    np.testing.assert_array_equal(decoded.tensors["x"], x)
    np.testing.assert_array_equal(decoded.tensors["ids"], ids)


def test_encode_infer_body_asks_binary_output_when_outputs_unnamed() -> None:
    body, head_len = wire.encode_infer_body(
        {"x": np.zeros((1, 2), np.float32)}, None, {"priority": 1}
    )
    header = orjson.loads(body[:head_len])
    assert header["parameters"] == {"binary_data_output": True, "priority": 1}


def test_decode_body_reads_json_data_when_no_binary_size() -> None:
    body = orjson.dumps(
        {"outputs": [{"name": "y", "datatype": "INT32", "shape": [2], "data": [7, 8]}]}
    )
    out = wire.decode_body(body, None)
    assert out.tensors["y"].tolist() == [7, 8]


def test_decode_body_raises_when_binary_size_runs_past_body() -> None:
    head = orjson.dumps(
        {
            "outputs": [
                {
                    "name": "y",
                    "datatype": "FP32",
                    "shape": [4],
                    "parameters": {"binary_data_size": 16},
                }
            ]
        }
    )
    with pytest.raises(
        InvalidArgumentError,
        match=r"tensor 'y': binary_data_size 16 runs past the body \(8 bytes left\)",
    ):
        wire.decode_body(head + b"\0" * 8, len(head))


def test_decode_body_raises_when_element_count_disagrees_with_shape() -> None:
    head = orjson.dumps(
        {
            "outputs": [
                {
                    "name": "y",
                    "datatype": "FP32",
                    "shape": [3],
                    "parameters": {"binary_data_size": 8},
                }
            ]
        }
    )
    with pytest.raises(InvalidArgumentError, match=r"2 elements for shape \[3\]"):
        wire.decode_body(head + b"\0" * 8, len(head))


def test_encode_response_body_round_trips_when_decoded_as_response() -> None:
    y = np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3)
    body, head_len = wire.encode_response_body("m", "1", {"y": y})
    out = wire.decode_body(body, head_len)
    assert out.header["model_name"] == "m"
    np.testing.assert_array_equal(out.tensors["y"], y)


def test_build_http_request_has_lengths_and_route_key_when_given() -> None:
    req = wire.build_http_request(
        "127.0.0.1", 9, "/v2/models/m/infer", b"abcdef", 2, {wire.ROUTE_KEY_HEADER: "user-7"}
    )
    head, _, body = req.partition(b"\r\n\r\n")
    assert body == b"abcdef"
    assert b"Content-Length: 6" in head
    assert b"Inference-Header-Content-Length: 2" in head
    assert b"x-rayfront-route-key: user-7" in head


def test_infer_path_pins_version_when_given() -> None:
    assert wire.infer_path("m") == "/v2/models/m/infer"
    assert wire.infer_path("m", "3") == "/v2/models/m/versions/3/infer"


def test_grpc_request_round_trips_when_parsed_by_tritonclient_protos() -> None:
    from tritonclient.grpc import service_pb2

    x = np.ones((2, 3), dtype=np.float32)
    payload = wire.grpc_infer_request("m", {"x": x}, version="2", route_key="k")
    req = service_pb2.ModelInferRequest.FromString(payload)
    assert (req.model_name, req.model_version) == ("m", "2")
    assert list(req.inputs[0].shape) == [2, 3]
    assert req.parameters[wire.ROUTE_KEY_HEADER].string_param == "k"
    assert np.frombuffer(req.raw_input_contents[0], np.float32).tolist() == [1.0] * 6


def test_grpc_decode_response_raises_when_raw_contents_missing() -> None:
    from tritonclient.grpc import service_pb2

    resp = service_pb2.ModelInferResponse(model_name="m")
    out = resp.outputs.add()
    out.name, out.datatype = "y", "FP32"
    out.shape.extend([1])
    with pytest.raises(InvalidArgumentError, match="1 outputs but 0 raw_output_contents"):
        wire.grpc_decode_response(resp.SerializeToString())
    resp.raw_output_contents.append(np.float32(5).tobytes())
    assert wire.grpc_decode_response(resp.SerializeToString())["y"].tolist() == [5.0]
