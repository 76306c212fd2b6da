"""The gRPC service on a real grpc.aio server, driven by the real tritonclient.grpc client."""

from __future__ import annotations

import asyncio
import logging
import queue

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from protocol_fakes import ADMIN_TOKEN, MAX_BODY
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import InferenceServerException

DTYPES = {
    "BOOL": np.array([[True, False]]),
    "UINT8": np.array([[0, 255]], np.uint8),
    "UINT16": np.array([[0, 65535]], np.uint16),
    "UINT32": np.array([[0, 2**32 - 1]], np.uint32),
    "UINT64": np.array([[0, 2**64 - 1]], np.uint64),
    "INT8": np.array([[-128, 127]], np.int8),
    "INT16": np.array([[-(2**15), 2]], np.int16),
    "INT32": np.array([[-(2**31), 2]], np.int32),
    "INT64": np.array([[-(2**63), 2]], np.int64),
    "FP16": np.array([[0.5, 65504]], np.float16),
    "FP32": np.array([[0.5, 1e30]], np.float32),
    "FP64": np.array([[0.5, 1e300]], np.float64),
    "BYTES": np.array([[b"\x00\xff", "wörld".encode()]], dtype=object),
}


def _input(name: str, arr: np.ndarray, datatype: str = "FP32") -> grpcclient.InferInput:
    i = grpcclient.InferInput(name, list(arr.shape), datatype)
    i.set_data_from_numpy(arr)
    return i


def _add_inputs(a: np.ndarray, b: np.ndarray) -> list[grpcclient.InferInput]:
    return [_input("INPUT0", a), _input("INPUT1", b)]


def _check_add_works(client) -> None:
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(client.infer("add", _add_inputs(a, a)).as_numpy("OUTPUT0"), a * 2)


def _code(exc_info) -> tuple[str, str]:
    return exc_info.value.status(), exc_info.value.message()


def test_grpc_infer_returns_sum_and_difference(grpc_client):
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = np.full((2, 4), 0.5, np.float32)
    result = grpc_client.infer("add", _add_inputs(a, b), request_id="g1")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    assert result.get_response().id == "g1"


def test_grpc_infer_returns_requested_outputs_when_compressed(grpc_client):
    a = np.ones((1, 4), np.float32)
    result = grpc_client.infer(
        "add",
        _add_inputs(a, a),
        outputs=[grpcclient.InferRequestedOutput("OUTPUT1")],
        compression_algorithm="gzip",
    )
    assert result.as_numpy("OUTPUT0") is None
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), np.zeros((1, 4)))


@pytest.mark.parametrize("datatype", list(DTYPES))
def test_grpc_infer_round_trips_every_datatype_when_echoed(grpc_client, datatype):
    arr = DTYPES[datatype]
    got = grpc_client.infer("echo", [_input("x", arr, datatype)]).as_numpy("OUT_x")
    assert got.shape == arr.shape
    np.testing.assert_array_equal(got, arr)


def test_grpc_infer_returns_top_k_when_classification_requested(grpc_client):
    a = np.array([[0.1, 0.9, 0.3, 0.2]], np.float32)
    out = grpcclient.InferRequestedOutput("OUTPUT0", class_count=2)
    result = grpc_client.infer("add", _add_inputs(a, np.zeros_like(a)), outputs=[out])
    assert result.as_numpy("OUTPUT0").tolist() == [[b"0.900000:1", b"0.300000:2"]]


def test_grpc_infer_passes_route_key_and_parameters_when_given(servers, grpc_client):
    a = np.ones((1, 4), np.float32)
    grpc_client.infer(
        "add",
        _add_inputs(a, a),
        headers={"x-rayfront-route-key": "user-7"},
        priority=2,
        timeout=900,
    )
    req = servers.dataplane.requests[-1]
    assert (req.route_key, req.priority, req.timeout_us) == ("user-7", 2, 900)


def test_grpc_metadata_calls_succeed_when_model_known(grpc_client):
    assert grpc_client.is_server_live()
    assert grpc_client.is_server_ready()
    assert grpc_client.is_model_ready("add")
    assert not grpc_client.is_model_ready("add", "7")
    assert not grpc_client.is_model_ready("nope")
    assert grpc_client.get_server_metadata().name == "rayfront"
    meta = grpc_client.get_model_metadata("add", as_json=True)
    assert meta["inputs"][0] == {"name": "INPUT0", "datatype": "FP32", "shape": ["-1", "4"]}
    config = grpc_client.get_model_config("add").config
    assert (config.max_batch_size, list(config.input[0].dims)) == (8, [4])
    assert grpc_client.get_inference_statistics("add").model_stats[0].name == "add"
    assert len(grpc_client.get_inference_statistics().model_stats) == 2
    assert {m.name for m in grpc_client.get_model_repository_index().models} == {"add", "upper"}


def test_grpc_repository_load_passes_token_when_metadata_given(servers, grpc_client):
    grpc_client.load_model("add", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    grpc_client.unload_model("add", headers={"x-rayfront-admin-token": ADMIN_TOKEN})
    assert servers.dataplane.admin_calls[-2:] == [("load", "add"), ("unload", "add")]
    calls = len(servers.dataplane.admin_calls)
    with pytest.raises(InferenceServerException) as exc:
        grpc_client.load_model("add")
    assert _code(exc) == (
        "StatusCode.PERMISSION_DENIED",
        "RepositoryModelLoad is an admin call and needs a valid admin token: send "
        "'Authorization: Bearer <token>' or 'x-rayfront-admin-token: <token>'",
    )
    assert len(servers.dataplane.admin_calls) == calls  # refused before the repository


def test_grpc_repository_load_passes_config_override_when_given(servers, grpc_client):
    grpc_client.load_model(
        "add", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, config='{"max_batch_size": 2}'
    )
    assert servers.dataplane.load_configs[-1] == '{"max_batch_size": 2}'


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (
            lambda: [
                _input("INPUT0", np.zeros((1, 4), np.int64), "INT64"),
                _input("INPUT1", np.zeros((1, 4), np.float32)),
            ],
            "input 'INPUT0' of model 'add': expected dtype FP32, got INT64",
        ),
        (
            lambda: _add_inputs(np.zeros((1, 5), np.float32), np.zeros((1, 5), np.float32)),
            "input 'INPUT0' of model 'add': expected shape [-1,4], got [1,5]",
        ),
        (
            lambda: _add_inputs(np.zeros((1, 4), np.float32), np.zeros((1, 4), np.float32))[:1],
            "input 'INPUT1' of model 'add': missing required input",
        ),
        (
            lambda: [
                *_add_inputs(np.zeros((1, 4), np.float32), np.zeros((1, 4), np.float32)),
                _input("EXTRA", np.zeros(1, np.float32)),
            ],
            "input 'EXTRA' of model 'add': unexpected input",
        ),
        (
            lambda: _add_inputs(np.zeros((9, 4), np.float32), np.zeros((9, 4), np.float32)),
            "batch size 9 exceeds the model's max_batch_size 8",
        ),
    ],
)
def test_grpc_infer_returns_invalid_argument_when_request_does_not_fit(
    grpc_client, inputs, message
):
    with pytest.raises(InferenceServerException) as exc:
        grpc_client.infer("add", inputs())
    code, text = _code(exc)
    assert code == "StatusCode.INVALID_ARGUMENT"
    assert message in text
    _check_add_works(grpc_client)


def _stub(servers):
    channel = grpc.insecure_channel(servers.grpc_url)
    return channel, service_pb2_grpc.GRPCInferenceServiceStub(channel)


def test_grpc_infer_returns_invalid_argument_when_raw_size_wrong(servers, grpc_client):
    channel, stub = _stub(servers)
    msg = pb.ModelInferRequest(model_name="add")
    msg.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 4])
    msg.raw_input_contents.append(b"\0" * 12)
    with channel, pytest.raises(grpc.RpcError) as exc:
        stub.ModelInfer(msg, timeout=10)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        exc.value.details()
        == "input 'INPUT0' of model 'add': expected 16 bytes for FP32[1,4], got 12"
    )
    _check_add_works(grpc_client)


def test_grpc_infer_returns_not_found_when_model_unknown(grpc_client):
    with pytest.raises(InferenceServerException) as exc:
        grpc_client.infer("nope", [_input("x", np.zeros(1, np.float32))])
    assert _code(exc) == ("StatusCode.NOT_FOUND", "unknown model 'nope'")
    with pytest.raises(InferenceServerException) as exc:
        grpc_client.get_model_config("nope")
    assert _code(exc)[0] == "StatusCode.NOT_FOUND"


def test_grpc_infer_returns_unavailable_when_model_busy(grpc_client):
    with pytest.raises(InferenceServerException) as exc:
        grpc_client.infer("busy", [_input("x", np.zeros(1, np.float32))])
    assert _code(exc) == (
        "StatusCode.UNAVAILABLE",
        "model 'busy' queue is full (8 waiting); retry later",
    )


def test_grpc_infer_returns_internal_without_internals_when_model_crashes(grpc_client, caplog):
    with (
        caplog.at_level(logging.ERROR, logger="rayfront.protocol.grpc_service"),
        pytest.raises(InferenceServerException) as exc,
    ):
        grpc_client.infer("boom", [_input("x", np.zeros(1, np.float32))])
    assert _code(exc) == ("StatusCode.INTERNAL", "internal error: RuntimeError")
    assert any(
        r.exc_info and "secret internal detail" in str(r.exc_info[1]) for r in caplog.records
    )
    _check_add_works(grpc_client)


def test_grpc_infer_returns_resource_exhausted_when_message_over_cap(grpc_client):
    big = np.zeros((1, MAX_BODY // 4 + 16), np.float32)
    with pytest.raises(InferenceServerException) as exc:
        grpc_client.infer("add", [_input("INPUT0", big)])
    assert _code(exc)[0] == "StatusCode.RESOURCE_EXHAUSTED"
    _check_add_works(grpc_client)


def test_grpc_live_answers_when_inference_is_blocked(servers, grpc_client):
    dp = servers.dataplane

    async def arm() -> None:
        dp.slow_started.clear()
        dp.slow_release = asyncio.Event()

    async def release() -> None:
        dp.slow_release.set()

    servers.call(arm())
    results: queue.Queue = queue.Queue()
    grpc_client.async_infer(
        "slow",
        [_input("x", np.zeros(1, np.float32))],
        callback=lambda result, error: results.put((result, error)),
    )
    try:
        servers.call(asyncio.wait_for(dp.slow_started.wait(), 10))
        assert grpc_client.is_server_live()
    finally:
        servers.call(release())
    result, error = results.get(timeout=10)
    assert error is None
    assert result.as_numpy("OUT").tolist() == [0.0]


def test_grpc_stream_infer_returns_results_and_inband_errors(servers):
    client = grpcclient.InferenceServerClient(servers.grpc_url)
    results: queue.Queue = queue.Queue()
    try:
        client.start_stream(callback=lambda result, error: results.put((result, error)))
        a = np.ones((1, 4), np.float32)
        client.async_stream_infer("add", _add_inputs(a, a), request_id="s1")
        client.async_stream_infer("add", _add_inputs(a[:, :3], a[:, :3]), request_id="s2")
        got = [results.get(timeout=10) for _ in range(2)]
    finally:
        client.stop_stream()
        client.close()
    ok = [r for r, e in got if e is None]
    errors = [e for r, e in got if e is not None]
    assert len(ok) == 1
    assert ok[0].get_response().id == "s1"
    np.testing.assert_array_equal(ok[0].as_numpy("OUTPUT0"), a * 2)
    assert len(errors) == 1
    assert "expected shape [-1,4], got [1,3]" in errors[0].message()


def test_grpc_infer_reads_typed_contents_when_over_offload_threshold(servers):
    arr = np.arange(30_000, dtype=np.float32)  # 120 KB of fp32_contents, decoded in a thread
    msg = pb.ModelInferRequest(model_name="echo")
    msg.inputs.add(name="x", datatype="FP32", shape=[arr.size]).contents.fp32_contents.extend(
        arr.tolist()
    )
    channel, stub = _stub(servers)
    with channel:
        response = stub.ModelInfer(msg, timeout=10)
    result = grpcclient.InferResult(response)
    np.testing.assert_array_equal(result.as_numpy("OUT_x"), arr)


def test_grpc_undecodable_request_is_invalid_argument_not_unknown(servers):
    with grpc.insecure_channel(servers.grpc_url) as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=None,
            response_deserializer=None,
        )
        with pytest.raises(grpc.RpcError) as exc:
            call(b"\xff\xff\xff\xff not a protobuf", timeout=10)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ModelInfer: the request is not a valid ModelInferRequest" in exc.value.details()


def test_grpc_methods_rayfront_lacks_answer_unimplemented_by_name(servers):
    with grpc.insecure_channel(servers.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as exc:
            stub.CudaSharedMemoryStatus(pb.CudaSharedMemoryStatusRequest(), timeout=10)
    assert exc.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "CudaSharedMemoryStatus is not supported" in exc.value.details()


def test_grpc_stream_stops_taking_requests_when_client_never_reads(servers):
    import time

    from rayfront.protocol.grpc_service import STREAM_CONCURRENCY

    blob = np.zeros(64 * 1024, np.float32)  # 256 KB each way (the echo model returns it)

    def requests():
        for i in range(400):
            msg = pb.ModelInferRequest(model_name="echo", id=str(i))
            t = msg.inputs.add()
            t.name, t.datatype = "X", "FP32"
            t.shape.extend([blob.size])
            msg.raw_input_contents.append(blob.tobytes())
            yield msg

    before = sum(1 for r in servers.dataplane.requests if r.model_name == "echo")
    with grpc.insecure_channel(
        servers.grpc_url, options=[("grpc.max_receive_message_length", -1)]
    ) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        call = stub.ModelStreamInfer(requests())  # never read
        time.sleep(3.0)
        taken = sum(1 for r in servers.dataplane.requests if r.model_name == "echo") - before
        call.cancel()
    # Unanswered work is held to the in-flight window plus what the transport buffers,
    # not the 400 requests (100 MB of answers) a queue without bound would have kept.
    assert 0 < taken <= STREAM_CONCURRENCY + 64, taken


def test_grpc_unavailable_carries_retry_pushback_so_clients_back_off(servers):
    request = pb.ModelInferRequest(model_name="busy")
    x = request.inputs.add(name="x", datatype="FP32", shape=[1])
    x.contents.fp32_contents.append(0.0)
    with grpc.insecure_channel(servers.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as exc:
            stub.ModelInfer(request, timeout=10)
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
    assert ("grpc-retry-pushback-ms", "1000") in tuple(exc.value.trailing_metadata())
