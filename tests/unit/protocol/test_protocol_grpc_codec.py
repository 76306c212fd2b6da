"""Pure tests of the gRPC message codec (no server)."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc._utils import _get_inference_request

from rayfront.errors import InvalidArgumentError
from rayfront.protocol import grpc_codec
from rayfront.protocol.types import InferRequest, InferResponse, RequestedOutput


def _client_request(*inputs: grpcclient.InferInput, outputs=None, **kw) -> pb.ModelInferRequest:
    """The exact message tritonclient.grpc would send."""
    return _get_inference_request(
        model_name="m",
        inputs=list(inputs),
        model_version=kw.get("version", ""),
        request_id=kw.get("request_id", ""),
        outputs=outputs,
        sequence_id=0,
        sequence_start=False,
        sequence_end=False,
        priority=kw.get("priority", 0),
        timeout=kw.get("timeout"),
        parameters=kw.get("parameters"),
    )


def _input(name: str, arr: np.ndarray, datatype: str) -> grpcclient.InferInput:
    i = grpcclient.InferInput(name, list(arr.shape), datatype)
    i.set_data_from_numpy(arr)
    return i


def test_grpc_decode_reads_raw_contents_when_sent_by_tritonclient():
    a = np.arange(6, dtype=np.float16).reshape(2, 3)
    s = np.array([b"x", b"yz"], dtype=object)
    msg = _client_request(
        _input("a", a, "FP16"),
        _input("s", s, "BYTES"),
        outputs=[grpcclient.InferRequestedOutput("o", class_count=2)],
        request_id="r1",
        priority=3,
        timeout=1000,
        parameters={"x-rayfront-route-key": "user-9", "custom": 1.5},
    )
    req = grpc_codec.infer_request_from_pb(msg)
    np.testing.assert_array_equal(req.inputs["a"], a)
    assert req.inputs["s"].tolist() == [b"x", b"yz"]
    assert (req.id, req.priority, req.timeout_us, req.route_key) == ("r1", 3, 1000, "user-9")
    assert req.parameters["custom"] == 1.5
    assert req.outputs == [RequestedOutput("o", class_count=2)]


@pytest.mark.parametrize(
    ("datatype", "field", "values", "dtype"),
    [
        ("BOOL", "bool_contents", [True, False], np.bool_),
        ("INT8", "int_contents", [-3, 4], np.int8),
        ("INT32", "int_contents", [-3, 4], np.int32),
        ("INT64", "int64_contents", [-(2**40), 4], np.int64),
        ("UINT16", "uint_contents", [3, 65535], np.uint16),
        ("UINT64", "uint64_contents", [3, 2**64 - 1], np.uint64),
        ("FP32", "fp32_contents", [0.5, -2.0], np.float32),
        ("FP64", "fp64_contents", [0.5, -2.0], np.float64),
        ("BYTES", "bytes_contents", [b"a", b"bc"], np.object_),
    ],
)
def test_grpc_decode_reads_typed_contents_when_no_raw(datatype, field, values, dtype):
    msg = pb.ModelInferRequest(model_name="m")
    t = msg.inputs.add(name="a", datatype=datatype, shape=[2])
    getattr(t.contents, field).extend(values)
    arr = grpc_codec.infer_request_from_pb(msg).inputs["a"]
    assert arr.dtype == dtype
    assert arr.tolist() == values


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda m: m.inputs.add(name="a", datatype="FP16", shape=[1]),
            r"input 'a' of model 'm': FP16 has no typed contents field",
        ),
        (
            lambda m: m.inputs.add(
                name="a", datatype="FP32", shape=[3]
            ).contents.fp32_contents.extend([1.0]),
            r"input 'a' of model 'm': shape \[3\] needs 3 elements, fp32_contents has 1",
        ),
        (
            lambda m: m.inputs.add(
                name="a", datatype="INT8", shape=[1]
            ).contents.int_contents.extend([1000]),
            r"value out of range for INT8",
        ),
        (
            lambda m: (
                m.inputs.add(name="a", datatype="FP32", shape=[1]),
                m.inputs.add(name="b", datatype="FP32", shape=[1]),
                m.raw_input_contents.append(b"\0" * 4),
            ),
            r"1 raw_input_contents for 2 inputs",
        ),
        (
            lambda m: (
                m.inputs.add(name="a", datatype="FP32", shape=[2]),
                m.raw_input_contents.append(b"\0" * 4),
            ),
            r"input 'a' of model 'm': expected 8 bytes for FP32\[2\], got 4",
        ),
        (lambda m: None, r"request to model 'm': no inputs given"),
    ],
)
def test_grpc_decode_rejects_with_clear_message_when_request_malformed(build, message):
    msg = pb.ModelInferRequest(model_name="m")
    build(msg)
    with pytest.raises(InvalidArgumentError, match=message):
        grpc_codec.infer_request_from_pb(msg)


def test_grpc_encode_is_read_by_tritonclient_when_outputs_mixed():
    response = InferResponse(
        model_name="m",
        model_version="1",
        outputs={
            "f": np.arange(4, dtype=np.float32).reshape(2, 2),
            "s": np.array([b"q"], dtype=object),
            "skip": np.zeros(1),
        },
        parameters={"flag": True, "n": 3, "name": "x"},
    )
    req = InferRequest(
        model_name="m", inputs={}, id="r2", outputs=[RequestedOutput("f"), RequestedOutput("s")]
    )
    msg = grpc_codec.infer_response_to_pb(response, req)
    result = grpcclient.InferResult(msg)
    np.testing.assert_array_equal(
        result.as_numpy("f"), np.arange(4, dtype=np.float32).reshape(2, 2)
    )
    assert result.as_numpy("s").tolist() == [b"q"]
    assert result.as_numpy("skip") is None
    assert msg.id == "r2"
    assert grpc_codec.params_from_pb(msg.parameters) == {"flag": True, "n": 3, "name": "x"}


def test_grpc_metadata_dicts_become_messages_when_converted():
    meta = grpc_codec.model_metadata_to_pb(
        {
            "name": "m",
            "versions": ["1", 2],
            "platform": "p",
            "inputs": [{"name": "a", "datatype": "FP32", "shape": [-1, 4]}],
            "outputs": [],
        }
    )
    assert list(meta.versions) == ["1", "2"]
    assert list(meta.inputs[0].shape) == [-1, 4]
    stats = grpc_codec.statistics_to_pb(
        {
            "model_stats": [
                {
                    "name": "m",
                    "inference_count": 5,
                    "inference_stats": {"success": {"count": 5, "ns": 10}},
                }
            ]
        }
    )
    assert stats.model_stats[0].inference_stats.success.count == 5
