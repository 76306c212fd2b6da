"""The ASGI app under a real uvicorn server, driven by the real tritonclient.http client."""

from __future__ import annotations

import asyncio
import gzip
import http.client
import logging
import struct

import numpy as np
import orjson
import pytest
import tritonclient.http as httpclient
from protocol_fakes import ADMIN_TOKEN, MAX_BODY
from tritonclient.utils import InferenceServerException

DTYPE_CASES = {
    "BOOL": np.array([[True, False], [False, True]]),
    "UINT8": np.array([[0, 255], [1, 2]], np.uint8),
    "UINT16": np.array([[0, 65535], [1, 2]], np.uint16),
    "UINT32": np.array([[0, 2**32 - 1], [1, 2]], np.uint32),
    "UINT64": np.array([[0, 2**63], [1, 2]], np.uint64),
    "INT8": np.array([[-128, 127], [1, 2]], np.int8),
    "INT16": np.array([[-(2**15), 2], [1, 2]], np.int16),
    "INT32": np.array([[-(2**31), 2], [1, 2]], np.int32),
    "INT64": np.array([[-(2**62), 2], [1, 2]], np.int64),
    "FP16": np.array([[0.5, -1.5], [65504, 2]], np.float16),
    "FP32": np.array([[0.5, -1.5], [1e30, 2]], np.float32),
    "FP64": np.array([[0.5, -1.5], [1e300, 2]], np.float64),
    "BYTES": np.array([[b"a", b""], [b"hello", "wörld".encode()]], dtype=object),
}


def _add_inputs(a: np.ndarray, b: np.ndarray, binary: bool = True) -> list[httpclient.InferInput]:
    ins = []
    for name, arr in (("INPUT0", a), ("INPUT1", b)):
        i = httpclient.InferInput(name, list(arr.shape), "FP32")
        i.set_data_from_numpy(arr, binary_data=binary)
        ins.append(i)
    return ins


def _check_add_works(client) -> None:
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    result = client.infer("add", _add_inputs(a, a))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a * 2)


def _raw(servers, method: str, path: str, body: bytes = b"", headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", servers.http_port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def _error(exc_info) -> tuple[str, str]:
    return exc_info.value.status(), exc_info.value.message()


# --- inference ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("binary_in", "binary_out"), [(True, True), (False, False), (True, False), (False, True)]
)
def test_http_infer_returns_sum_when_binary_or_json(http_client, binary_in, binary_out):
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = np.full((2, 4), 0.5, np.float32)
    outputs = [
        httpclient.InferRequestedOutput(n, binary_data=binary_out) for n in ("OUTPUT0", "OUTPUT1")
    ]
    result = http_client.infer(
        "add", _add_inputs(a, b, binary_in), outputs=outputs, request_id="req-1"
    )
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    response = result.get_response()
    assert response["id"] == "req-1"
    assert response["model_name"] == "add"
    assert ("parameters" in response["outputs"][0]) is binary_out


def test_http_infer_returns_only_requested_output_when_outputs_given(http_client):
    a = np.ones((1, 4), np.float32)
    result = http_client.infer(
        "add", _add_inputs(a, a), outputs=[httpclient.InferRequestedOutput("OUTPUT1")]
    )
    assert result.as_numpy("OUTPUT0") is None
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), np.zeros((1, 4)))


@pytest.mark.parametrize("compression", ["gzip", "deflate"])
def test_http_infer_handles_compressed_bodies_when_client_compresses(http_client, compression):
    a = np.arange(4, dtype=np.float32).reshape(1, 4)
    result = http_client.infer(
        "add",
        _add_inputs(a, a),
        request_compression_algorithm=compression,
        response_compression_algorithm=compression,
    )
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a * 2)


def test_http_infer_compresses_response_when_accept_encoding_gzip(servers):
    body = orjson.dumps(
        {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": ["abc"]}]}
    )
    status, headers, raw = _raw(
        servers, "POST", "/v2/models/upper/infer", body, {"Accept-Encoding": "gzip"}
    )
    assert status == 200
    assert headers["content-encoding"] == "gzip"
    assert orjson.loads(gzip.decompress(raw))["outputs"][0]["data"] == ["ABC"]


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("datatype", list(DTYPE_CASES))
def test_http_infer_round_trips_every_datatype_when_echoed(http_client, datatype, binary):
    arr = DTYPE_CASES[datatype]
    i = httpclient.InferInput("x", list(arr.shape), datatype)
    i.set_data_from_numpy(arr, binary_data=binary)
    out = httpclient.InferRequestedOutput("OUT_x", binary_data=binary)
    result = http_client.infer("echo", [i], outputs=[out])
    got = result.as_numpy("OUT_x")
    if datatype == "BYTES" and not binary:
        got = np.vectorize(lambda s: s.encode() if isinstance(s, str) else s, otypes=[object])(got)
    np.testing.assert_array_equal(got, arr)
    assert got.shape == arr.shape


def test_http_infer_returns_bytes_when_model_uses_strings(http_client):
    i = httpclient.InferInput("TEXT", [2], "BYTES")
    i.set_data_from_numpy(np.array([b"ab", b"cd"], dtype=object))
    result = http_client.infer("upper", [i])
    assert result.as_numpy("UPPER").tolist() == [b"AB", b"CD"]


def test_http_infer_returns_top_k_when_classification_requested(http_client):
    a = np.array([[0.1, 0.9, 0.3, 0.2]], np.float32)
    out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=False, class_count=2)
    result = http_client.infer("add", _add_inputs(a, np.zeros_like(a)), outputs=[out])
    assert result.as_numpy("OUTPUT0").tolist() == [["0.900000:1", "0.300000:2"]]


def test_http_infer_passes_route_key_and_parameters_when_given(servers, http_client):
    a = np.ones((1, 4), np.float32)
    http_client.infer(
        "add",
        _add_inputs(a, a),
        headers={"x-rayfront-route-key": "user-42"},
        priority=3,
        timeout=5000,
        model_version="1",
    )
    req = servers.dataplane.requests[-1]
    assert (req.route_key, req.priority, req.timeout_us, req.model_version) == (
        "user-42",
        3,
        5000,
        "1",
    )


# --- metadata, health, admin -------------------------------------------------------------


def test_http_metadata_endpoints_answer_when_model_known(http_client):
    assert http_client.is_server_live()
    assert http_client.is_server_ready()
    assert http_client.is_model_ready("add")
    assert http_client.is_model_ready("add", "1")
    assert not http_client.is_model_ready("add", "7")
    assert not http_client.is_model_ready("nope")
    assert http_client.get_server_metadata()["name"] == "rayfront"
    meta = http_client.get_model_metadata("add", "1")
    assert meta["inputs"][0] == {"name": "INPUT0", "datatype": "FP32", "shape": [-1, 4]}
    config = http_client.get_model_config("add")
    assert config["max_batch_size"] == 8
    assert config["input"][0]["dims"] == [4]
    assert config["input"][0]["data_type"] == "TYPE_FP32"
    assert http_client.get_model_config("add", "1")["name"] == "add"
    stats = http_client.get_inference_statistics("add")
    assert stats["model_stats"][0]["name"] == "add"
    assert len(http_client.get_inference_statistics()["model_stats"]) == 2
    assert http_client.get_inference_statistics("add", "1")["model_stats"][0]["version"] == "1"
    assert {m["name"] for m in http_client.get_model_repository_index()} == {"add", "upper"}


def test_http_repository_load_passes_token_when_bearer_or_header(servers, http_client):
    http_client.load_model("add", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    http_client.unload_model("add", headers={"x-rayfront-admin-token": ADMIN_TOKEN})
    assert servers.dataplane.admin_calls[-2:] == [("load", "add"), ("unload", "add")]
    calls = len(servers.dataplane.admin_calls)
    with pytest.raises(InferenceServerException) as exc:
        http_client.load_model("add")
    assert _error(exc) == (
        "403",
        "POST /v2/repository/models/add/load is an admin call and needs a valid admin token: "
        "send 'Authorization: Bearer <token>' or 'x-rayfront-admin-token: <token>'",
    )
    assert len(servers.dataplane.admin_calls) == calls  # refused before the repository


def test_http_repository_load_passes_config_override_when_given(servers, http_client):
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    http_client.load_model("add", headers=auth, config='{"max_batch_size": 2}')
    assert servers.dataplane.load_configs[-1] == '{"max_batch_size": 2}'
    status, _, body = _raw(
        servers,
        "POST",
        "/v2/repository/models/add/load",
        b'{"parameters": {"config": {"max_batch_size": 2}}}',
        auth,
    )
    assert status == 400 and b"parameter 'config' must be a string of JSON" in body


def test_http_model_ready_is_404_with_triton_text_when_model_unknown(servers):
    status, _, body = _raw(servers, "GET", "/v2/models/nope/ready")
    assert status == 404 and b"unknown model 'nope'" in body
    assert _raw(servers, "GET", "/v2/models/add/ready")[0] == 200


def test_http_metrics_returns_prometheus_text(servers):
    status, headers, body = _raw(servers, "GET", "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    assert b"nv_inference_request_success" in body


def test_http_live_answers_when_inference_is_blocked(servers, http_client):
    dp = servers.dataplane

    async def arm() -> None:
        dp.slow_started.clear()
        dp.slow_release = asyncio.Event()

    servers.call(arm())
    slow = http_client.async_infer(
        "slow",
        [httpclient.InferInput("x", [1], "FP32").set_data_from_numpy(np.zeros(1, np.float32))],
    )
    try:
        servers.call(asyncio.wait_for(dp.slow_started.wait(), 10))
        assert _raw(servers, "GET", "/v2/health/live")[0] == 200
    finally:
        servers.call(_set(dp.slow_release))
    assert slow.get_result().as_numpy("OUT").tolist() == [0.0]


async def _set(event: asyncio.Event) -> None:
    event.set()


# --- errors: status, message, and the server keeps serving --------------------------------


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (
            lambda: [
                httpclient.InferInput("INPUT0", [1, 4], "INT64").set_data_from_numpy(
                    np.zeros((1, 4), np.int64)
                ),
                _add_inputs(np.zeros((1, 4), np.float32), np.zeros((1, 4), np.float32))[1],
            ],
            "input 'INPUT0' of model 'add': expected dtype FP32, got INT64",
        ),
        (
            lambda: _add_inputs(np.zeros((1, 5), np.float32), np.zeros((1, 5), np.float32)),
            r"input 'INPUT0' of model 'add': expected shape [-1,4], got [1,5]",
        ),
        (
            lambda: _add_inputs(np.zeros((1, 4), np.float32), np.zeros((1, 4), np.float32))[:1],
            "input 'INPUT1' of model 'add': missing required input",
        ),
        (
            lambda: [
                *_add_inputs(np.zeros((1, 4), np.float32), np.zeros((1, 4), np.float32)),
                httpclient.InferInput("EXTRA", [1], "FP32").set_data_from_numpy(
                    np.zeros(1, np.float32)
                ),
            ],
            "input 'EXTRA' of model 'add': unexpected input",
        ),
        (
            lambda: _add_inputs(np.zeros((9, 4), np.float32), np.zeros((9, 4), np.float32)),
            "input 'INPUT0' of model 'add': batch size 9 exceeds the model's max_batch_size 8",
        ),
    ],
)
def test_http_infer_returns_400_when_request_does_not_fit_model(http_client, inputs, message):
    with pytest.raises(InferenceServerException) as exc:
        http_client.infer("add", inputs())
    status, text = _error(exc)
    assert status == "400"
    assert text.startswith(message)
    _check_add_works(http_client)


def test_http_infer_returns_404_when_model_unknown(http_client):
    i = httpclient.InferInput("x", [1], "FP32").set_data_from_numpy(np.zeros(1, np.float32))
    with pytest.raises(InferenceServerException) as exc:
        http_client.infer("nope", [i])
    assert _error(exc) == ("404", "unknown model 'nope'")
    with pytest.raises(InferenceServerException) as exc:
        http_client.get_model_metadata("nope")
    assert _error(exc)[0] == "404"
    _check_add_works(http_client)


def test_http_infer_returns_503_when_model_unavailable(http_client):
    i = httpclient.InferInput("x", [1], "FP32").set_data_from_numpy(np.zeros(1, np.float32))
    with pytest.raises(InferenceServerException) as exc:
        http_client.infer("busy", [i])
    assert _error(exc) == ("503", "model 'busy' queue is full (8 waiting); retry later")


def test_http_infer_returns_500_without_internals_when_model_crashes(http_client, caplog):
    i = httpclient.InferInput("x", [1], "FP32").set_data_from_numpy(np.zeros(1, np.float32))
    with (
        caplog.at_level(logging.ERROR, logger="rayfront.protocol.http_app"),
        pytest.raises(InferenceServerException) as exc,
    ):
        http_client.infer("boom", [i])
    status, text = _error(exc)
    assert (status, text) == ("500", "internal error: RuntimeError")
    assert "secret" not in (exc.value.debug_details() or "")
    assert any(
        r.exc_info and "secret internal detail" in str(r.exc_info[1]) for r in caplog.records
    )
    _check_add_works(http_client)


def _binary_request(header: dict, blob: bytes) -> tuple[bytes, dict]:
    head = orjson.dumps(header)
    return head + blob, {
        "Inference-Header-Content-Length": str(len(head)),
        "Content-Type": "application/octet-stream",
    }


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        (b"{bad json", {}, "request to model 'add': body is not valid JSON"),
        (
            *_binary_request(
                {
                    "inputs": [
                        {
                            "name": "INPUT0",
                            "datatype": "FP32",
                            "shape": [1, 4],
                            "parameters": {"binary_data_size": 12},
                        }
                    ]
                },
                b"\0" * 12,
            ),
            "input 'INPUT0' of model 'add': expected 16 bytes for FP32[1,4], got 12",
        ),
        (
            b'{"inputs": []}',
            {"Inference-Header-Content-Length": "9999"},
            "Inference-Header-Content-Length 9999 exceeds the body size 14",
        ),
        (
            b'{"inputs": []}',
            {"Inference-Header-Content-Length": "x"},
            "Inference-Header-Content-Length must be a non-negative integer",
        ),
        (b"not gzip", {"Content-Encoding": "gzip"}, "request body is not valid gzip data"),
    ],
)
def test_http_infer_returns_400_when_body_malformed(servers, http_client, body, headers, message):
    status, _, raw = _raw(servers, "POST", "/v2/models/add/infer", body, headers)
    assert status == 400
    assert message in orjson.loads(raw)["error"]
    _check_add_works(http_client)


def test_http_infer_returns_400_when_body_over_cap_and_keeps_connection(servers, http_client):
    big = np.zeros((1, MAX_BODY // 4 + 16), np.float32)
    i = httpclient.InferInput("INPUT0", list(big.shape), "FP32").set_data_from_numpy(big)
    with pytest.raises(InferenceServerException) as exc:
        http_client.infer("add", [i])
    status, text = _error(exc)
    assert status == "400"
    assert f"exceeds the {MAX_BODY}-byte limit" in text
    _check_add_works(http_client)  # same keep-alive pool

    conn = http.client.HTTPConnection("127.0.0.1", servers.http_port, timeout=10)
    try:
        conn.request("POST", "/v2/models/add/infer", body=b"\0" * (MAX_BODY + 1))
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (
            400,
            orjson.dumps(
                {
                    "error": f"request body of {MAX_BODY + 1} bytes to /v2/models/add/infer exceeds the {MAX_BODY}-byte limit"
                }
            ),
        )
        conn.request("GET", "/v2/health/live")  # same connection still usable
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def test_http_returns_400_when_gzip_body_inflates_over_cap(servers):
    status, _, raw = _raw(
        servers,
        "POST",
        "/v2/models/add/infer",
        gzip.compress(b" " * (MAX_BODY + 10)),
        {"Content-Encoding": "gzip"},
    )
    assert status == 400
    assert "decompressed request body exceeds" in orjson.loads(raw)["error"]


def test_http_returns_404_json_when_route_unknown(servers):
    status, headers, raw = _raw(servers, "GET", "/v3/nothing")
    assert status == 404
    assert headers["content-type"] == "application/json"
    assert orjson.loads(raw) == {"error": "no route for GET /v3/nothing"}


def test_http_returns_405_when_method_wrong(servers):
    status, headers, raw = _raw(servers, "GET", "/v2/models/add/infer")
    assert status == 405
    assert headers["allow"] == "POST"
    assert "method GET not allowed" in orjson.loads(raw)["error"]


def test_http_bytes_input_rejects_when_length_prefix_wrong(servers):
    blob = struct.pack("<I", 50) + b"abc"
    body, headers = _binary_request(
        {
            "inputs": [
                {
                    "name": "TEXT",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": len(blob)},
                }
            ]
        },
        blob,
    )
    status, _, raw = _raw(servers, "POST", "/v2/models/upper/infer", body, headers)
    assert status == 400
    assert (
        orjson.loads(raw)["error"]
        == "input 'TEXT' of model 'upper': BYTES element 0 claims 50 bytes but only 3 remain"
    )


def test_http_infer_round_trips_when_tensors_exceed_offload_threshold(http_client):
    # 120 KB in as JSON and out as binary: both conversions run in a worker thread.
    arr = np.linspace(0, 1, 30_000, dtype=np.float32).reshape(1, -1)
    i = httpclient.InferInput("x", list(arr.shape), "FP32")
    i.set_data_from_numpy(arr, binary_data=False)
    result = http_client.infer("echo", [i], request_compression_algorithm="gzip")
    np.testing.assert_array_equal(result.as_numpy("OUT_x"), arr)


def test_http_503_says_when_to_retry_and_400_does_not(servers):
    def infer(model: str, datatype: str = "FP32") -> tuple[int, dict]:
        body = {"inputs": [{"name": "x", "shape": [1], "datatype": datatype, "data": [0]}]}
        status, headers, _ = _raw(
            servers,
            "POST",
            f"/v2/models/{model}/infer",
            orjson.dumps(body),
            {"Content-Type": "application/json"},
        )
        return status, {k.lower(): v for k, v in headers.items()}

    status, headers = infer("busy")
    assert (status, headers.get("retry-after")) == (503, "1")
    status, headers = infer("nope")
    assert status == 404 and "retry-after" not in headers
