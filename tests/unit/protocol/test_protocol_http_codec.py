"""Pure tests of the Triton HTTP body codec (no server)."""

from __future__ import annotations

import gzip
import zlib

import numpy as np
import orjson
import pytest
from google.protobuf import json_format
from protocol_fakes import ADD_SPEC, model_config
from tritonclient.http import InferResult

from rayfront.errors import InvalidArgumentError, PayloadTooLargeError
from rayfront.protocol import http_codec
from rayfront.protocol.types import InferRequest, InferResponse, RequestedOutput


def _binary_body(header: dict, *blobs: bytes) -> tuple[bytes, int]:
    head = orjson.dumps(header)
    return head + b"".join(blobs), len(head)


def test_http_decode_reads_json_inputs_and_parameters_when_plain_json():
    body = orjson.dumps(
        {
            "id": "r1",
            "parameters": {
                "timeout": 500,
                "priority": 2,
                "binary_data_output": True,
                "x-rayfront-route-key": "u7",
            },
            "inputs": [
                {"name": "a", "datatype": "INT64", "shape": [2, 2], "data": [[1, 2], [3, 4]]}
            ],
            "outputs": [{"name": "o", "parameters": {"binary_data": False, "classification": 3}}],
        }
    )
    req = http_codec.decode_infer_request(body, model_name="m", model_version="2")
    assert (req.model_name, req.model_version, req.id) == ("m", "2", "r1")
    np.testing.assert_array_equal(req.inputs["a"], [[1, 2], [3, 4]])
    assert (req.timeout_us, req.priority, req.binary_output_default, req.route_key) == (
        500,
        2,
        True,
        "u7",
    )
    assert req.outputs == [RequestedOutput(name="o", binary=False, class_count=3)]


def test_http_decode_prefers_header_route_key_when_both_given():
    body = orjson.dumps(
        {
            "parameters": {"x-rayfront-route-key": "p"},
            "inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1]}],
        }
    )
    assert http_codec.decode_infer_request(body, model_name="m", route_key="h").route_key == "h"


def test_http_decode_slices_binary_inputs_in_order_when_header_length_given():
    a = np.arange(4, dtype=np.float32)
    b = np.array([1, 2], dtype=np.int8)
    body, hl = _binary_body(
        {
            "inputs": [
                {
                    "name": "a",
                    "datatype": "FP32",
                    "shape": [4],
                    "parameters": {"binary_data_size": 16},
                },
                {"name": "j", "datatype": "INT32", "shape": [1], "data": [5]},
                {
                    "name": "b",
                    "datatype": "INT8",
                    "shape": [2],
                    "parameters": {"binary_data_size": 2},
                },
            ]
        },
        a.tobytes(),
        b.tobytes(),
    )
    req = http_codec.decode_infer_request(body, model_name="m", header_length=hl)
    np.testing.assert_array_equal(req.inputs["a"], a)
    np.testing.assert_array_equal(req.inputs["b"], b)
    assert req.inputs["j"].tolist() == [5]
    assert list(req.inputs) == ["a", "j", "b"]


@pytest.mark.parametrize(
    ("body", "header_length", "message"),
    [
        (b"{not json", None, r"request to model 'm': body is not valid JSON"),
        (b"[1]", None, r"body must be a JSON object, got list"),
        (b"{}", None, r"'inputs' must be a non-empty list"),
        (
            b'{"inputs": [{"datatype": "FP32", "shape": [1], "data": [1]}]}',
            None,
            r"an input has no 'name'",
        ),
        (
            b'{"inputs": [{"name": "a", "shape": [1], "data": [1]}]}',
            None,
            r"input 'a' of model 'm': missing 'datatype'",
        ),
        (
            b'{"inputs": [{"name": "a", "datatype": "FP32", "data": [1]}]}',
            None,
            r"input 'a' of model 'm': missing 'shape'",
        ),
        (
            b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [1]}]}',
            None,
            r"has neither 'data' nor binary_data_size",
        ),
        (
            b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1]}, {"name": "a", "datatype": "FP32", "shape": [1], "data": [1]}]}',
            None,
            r"input 'a' of model 'm': given more than once",
        ),
        (
            b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}}]}',
            None,
            r"binary_data_size given but the request has no Inference-Header-Content-Length header",
        ),
        (
            b'{"id": 5, "inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1]}]}',
            None,
            r"'id' must be a string",
        ),
        (
            b'{"parameters": {"timeout": "soon"}, "inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1]}]}',
            None,
            r"parameter 'timeout' must be a non-negative integer, got 'soon'",
        ),
        (
            b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1], "parameters": {"shared_memory_region": "r"}}]}',
            None,
            r"input 'a' of model 'm': system shared memory is not enabled on this server",
        ),
        (
            b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1]}], "outputs": [{"parameters": {}}]}',
            None,
            r"each entry of 'outputs' needs a string 'name'",
        ),
        (b"{}", 50, r"Inference-Header-Content-Length 50 exceeds the body size 2"),
    ],
)
def test_http_decode_rejects_with_clear_message_when_body_malformed(body, header_length, message):
    with pytest.raises(InvalidArgumentError, match=message):
        http_codec.decode_infer_request(body, model_name="m", header_length=header_length)


def test_http_decode_rejects_when_binary_size_runs_past_body():
    body, hl = _binary_body(
        {
            "inputs": [
                {
                    "name": "a",
                    "datatype": "FP32",
                    "shape": [4],
                    "parameters": {"binary_data_size": 16},
                }
            ]
        },
        b"\0" * 12,
    )
    with pytest.raises(
        InvalidArgumentError,
        match=r"input 'a' of model 'm': binary_data_size 16 runs past the end of the body \(12 bytes left\)",
    ):
        http_codec.decode_infer_request(body, model_name="m", header_length=hl)


def test_http_decode_rejects_when_binary_size_disagrees_with_shape():
    body, hl = _binary_body(
        {
            "inputs": [
                {
                    "name": "a",
                    "datatype": "FP32",
                    "shape": [4],
                    "parameters": {"binary_data_size": 12},
                }
            ]
        },
        b"\0" * 12,
    )
    with pytest.raises(InvalidArgumentError, match=r"expected 16 bytes for FP32\[4\], got 12"):
        http_codec.decode_infer_request(body, model_name="m", header_length=hl)


def test_http_decode_rejects_when_extra_bytes_follow_inputs():
    body, hl = _binary_body(
        {
            "inputs": [
                {
                    "name": "a",
                    "datatype": "FP32",
                    "shape": [1],
                    "parameters": {"binary_data_size": 4},
                }
            ]
        },
        b"\0" * 8,
    )
    with pytest.raises(InvalidArgumentError, match="body has 4 bytes beyond the header"):
        http_codec.decode_infer_request(body, model_name="m", header_length=hl)


@pytest.mark.parametrize("value", ["abc", "-1"])
def test_http_parse_header_length_rejects_when_not_a_count(value):
    with pytest.raises(
        InvalidArgumentError, match="Inference-Header-Content-Length must be a non-negative integer"
    ):
        http_codec.parse_header_length(value)


@pytest.mark.parametrize(
    ("encoding", "pack"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda b: zlib.compress(b, wbits=-15)),
    ],
)
def test_http_decompress_inflates_when_encoding_supported(encoding, pack):
    data = b"x" * 5000
    assert http_codec.decompress(pack(data), encoding, max_bytes=10_000) == data


def test_http_decompress_stops_when_output_exceeds_cap():
    bomb = gzip.compress(b"\0" * (8 << 20))
    with pytest.raises(
        PayloadTooLargeError, match="decompressed request body exceeds the 1048576-byte limit"
    ):
        http_codec.decompress(bomb, "gzip", max_bytes=1 << 20)


@pytest.mark.parametrize(
    ("encoding", "message"),
    [("br", "unsupported Content-Encoding 'br'"), ("gzip", "not valid gzip data")],
)
def test_http_decompress_rejects_when_encoding_bad(encoding, message):
    with pytest.raises(InvalidArgumentError, match=message):
        http_codec.decompress(b"plain", encoding, max_bytes=100)


def _response() -> InferResponse:
    return InferResponse(
        model_name="m",
        model_version="1",
        outputs={
            "f": np.arange(6, dtype=np.float32).reshape(2, 3),
            "s": np.array([b"ab", b"c"], dtype=object),
            "h": np.array([1.5], dtype=np.float16),
        },
        id="r9",
    )


def test_http_encode_is_parsed_by_tritonclient_when_outputs_binary():
    req = InferRequest(model_name="m", inputs={}, binary_output_default=True)
    body, hl = http_codec.encode_infer_response(_response(), req)
    assert hl is not None
    result = InferResult.from_response_body(body, header_length=hl)
    np.testing.assert_array_equal(
        result.as_numpy("f"), np.arange(6, dtype=np.float32).reshape(2, 3)
    )
    assert result.as_numpy("s").tolist() == [b"ab", b"c"]
    assert result.as_numpy("h").dtype == np.float16
    assert result.get_response()["id"] == "r9"


def test_http_encode_mixes_json_and_binary_when_outputs_ask_differently():
    req = InferRequest(
        model_name="m",
        inputs={},
        outputs=[RequestedOutput("f", binary=False), RequestedOutput("s", binary=True)],
    )
    body, hl = http_codec.encode_infer_response(_response(), req)
    doc = orjson.loads(body[:hl])
    assert [o["name"] for o in doc["outputs"]] == ["f", "s"]  # 'h' was not requested
    assert doc["outputs"][0]["data"] == [0, 1, 2, 3, 4, 5]
    assert doc["outputs"][1]["parameters"] == {"binary_data_size": 11}
    result = InferResult.from_response_body(body, header_length=hl)
    assert result.as_numpy("s").tolist() == [b"ab", b"c"]


def test_http_encode_is_pure_json_when_nothing_binary():
    body, hl = http_codec.encode_infer_response(
        _response(), InferRequest(model_name="m", inputs={})
    )
    assert hl is None
    doc = orjson.loads(body)
    assert doc["outputs"][1] == {
        "name": "s",
        "datatype": "BYTES",
        "shape": [2],
        "data": ["ab", "c"],
    }
    assert doc["outputs"][2]["datatype"] == "FP16"


@pytest.mark.parametrize(
    ("accept", "expected"),
    [("gzip", "gzip"), ("deflate", "deflate"), ("br, gzip;q=0", None), (None, None)],
)
def test_http_compress_follows_accept_encoding_when_client_asks(accept, expected):
    body, enc = http_codec.compress(b"payload" * 10, accept)
    assert enc == expected
    raw = {"gzip": gzip.decompress, "deflate": zlib.decompress, None: lambda b: b}[enc](body)
    assert raw == b"payload" * 10


def test_http_model_config_json_round_trips_with_numeric_dims():
    cfg = model_config(ADD_SPEC)
    doc = http_codec.model_config_to_json(cfg)
    assert doc["input"][0]["dims"] == [4]
    assert doc["max_batch_size"] == 8
    assert doc["dynamic_batching"]["max_queue_delay_microseconds"] == 100
    assert json_format.ParseDict(doc, type(cfg)()) == cfg


def test_http_error_body_hides_internals_when_exception_is_not_ours():
    status, body = http_codec.error_body(KeyError("secret"))
    assert status == 500
    assert orjson.loads(body) == {"error": "internal error: KeyError"}


def test_http_decode_refuses_json_over_its_cap_before_parsing_but_not_binary_data():
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [300], "data": [0.5] * 300}]}
    body = orjson.dumps(doc)
    with pytest.raises(PayloadTooLargeError, match=r"its JSON is \d+ bytes, over the 1024-byte"):
        http_codec.decode_infer_request(body, model_name="m", max_json_bytes=1024)
    # The same tensor as binary data: the JSON part is small, the tensor bytes are not JSON.
    x = np.full(300, 0.5, np.float32)
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [300],
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ]
        }
    )
    request = http_codec.decode_infer_request(
        header + x.tobytes(), model_name="m", header_length=len(header), max_json_bytes=1024
    )
    np.testing.assert_array_equal(request.inputs["x"], x)
