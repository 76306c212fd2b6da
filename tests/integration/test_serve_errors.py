"""The error table, over HTTP and gRPC, against the real server.

Each case checks the status code, that the message names the input and model, and that
the server keeps serving correct answers afterwards.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import time

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _server_still_serves(server, ort_sessions):
    """After every error case: still live, still right."""
    yield
    x = np.random.default_rng(5).random((2, 1, 8, 8), dtype=np.float32)
    client = httpclient.InferenceServerClient(server.http_url)
    assert client.is_server_live()
    inp = httpclient.InferInput("pixels", [2, 1, 8, 8], "FP32")
    inp.set_data_from_numpy(x)
    got = client.infer("digits", [inp]).as_numpy("logits")
    np.testing.assert_allclose(
        got, ort_sessions["digits"].run(["logits"], {"pixels": x})[0], rtol=1e-5, atol=1e-5
    )


def _http_post(
    server, path: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def _grpc_error(server, request: service_pb2.ModelInferRequest) -> grpc.RpcError:
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request, timeout=30)
    return info.value


def _digits_json(
    shape: list[int], datatype: str = "FP32", name: str = "pixels", extra: list | None = None
) -> bytes:
    n = int(np.prod(shape))
    inputs = [{"name": name, "shape": shape, "datatype": datatype, "data": [0] * n}]
    return json.dumps({"inputs": inputs + (extra or [])}).encode()


CASES = {
    # name: (model, version, json body builder, expected fragment)
    "unknown model": (
        "nope",
        "",
        _digits_json([1, 1, 8, 8]),
        "Request for unknown model: 'nope' is not found",
    ),
    "unknown version": (
        "digits",
        "9",
        _digits_json([1, 1, 8, 8]),
        "Request for unknown model: 'digits' version 9 is not found",
    ),
    "wrong dtype": (
        "digits",
        "",
        _digits_json([1, 1, 8, 8], "INT64"),
        "input 'pixels' of model 'digits'",
    ),
    "wrong shape": ("digits", "", _digits_json([1, 1, 8, 7]), "input 'pixels' of model 'digits'"),
    "batch too large": ("digits", "", _digits_json([65, 1, 8, 8]), "max_batch_size"),
    "missing input": ("multi", "", _digits_json([1, 4], name="features"), "'ids'"),
    "extra input": (
        "digits",
        "",
        _digits_json(
            [1, 1, 8, 8], extra=[{"name": "bogus", "shape": [1], "datatype": "FP32", "data": [1]}]
        ),
        "'bogus'",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_http_rejects_with_status_and_clear_message_when_input_bad(server, case):
    model, version, body, fragment = CASES[case]
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    status, doc = _http_post(server, path, body, {"Content-Type": "application/json"})
    expected = 404 if case.startswith("unknown") else 400
    assert status == expected, doc
    assert fragment in doc["error"]
    assert "Traceback" not in doc["error"]


def _grpc_request(model: str, version: str, body: bytes) -> service_pb2.ModelInferRequest:
    doc = json.loads(body)
    req = service_pb2.ModelInferRequest(model_name=model, model_version=version)
    for t in doc["inputs"]:
        inp = req.inputs.add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        dtype = {"FP32": np.float32, "INT64": np.int64}[t["datatype"]]
        req.raw_input_contents.append(np.zeros(t["shape"], dtype).tobytes())
        del inp
    return req


@pytest.mark.parametrize("case", list(CASES))
def test_grpc_rejects_with_status_and_clear_message_when_input_bad(server, case):
    model, version, body, fragment = CASES[case]
    err = _grpc_error(server, _grpc_request(model, version, body))
    expected = (
        grpc.StatusCode.NOT_FOUND
        if case.startswith("unknown")
        else grpc.StatusCode.INVALID_ARGUMENT
    )
    assert err.code() == expected, err.details()
    assert fragment in err.details()


def test_http_and_grpc_reject_byte_size_mismatch_when_raw_bytes_short(server):
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "pixels",
                    "shape": [1, 1, 8, 8],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 250},
                }
            ]
        }
    ).encode()
    body = header + b"\0" * 250
    status, doc = _http_post(
        server,
        "/v2/models/digits/infer",
        body,
        {"Inference-Header-Content-Length": str(len(header))},
    )
    assert status == 400 and "expected 256 bytes" in doc["error"] and "'digits'" in doc["error"]
    req = service_pb2.ModelInferRequest(model_name="digits")
    req.inputs.add(name="pixels", datatype="FP32", shape=[1, 1, 8, 8])
    req.raw_input_contents.append(b"\0" * 250)
    err = _grpc_error(server, req)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "expected 256 bytes" in err.details()


@pytest.mark.parametrize(
    "body,headers,fragment",
    [
        (b"{not json", {"Content-Type": "application/json"}, "JSON"),
        (
            b'{"inputs": []}',
            {"Inference-Header-Content-Length": "9999"},
            "Inference-Header-Content-Length",
        ),
    ],
    ids=["bad json", "bad binary header"],
)
def test_http_rejects_malformed_body_when_unparseable(server, body, headers, fragment):
    status, doc = _http_post(server, "/v2/models/digits/infer", body, headers)
    assert status == 400 and fragment.lower() in doc["error"].lower()


def test_http_rejects_body_over_cap_when_larger_than_limit(server):
    # The session server runs with --max-body-mb 1.
    status, doc = _http_post(server, "/v2/models/digits/infer", b"x" * (2 * 1024 * 1024 + 10))
    assert status == 400 and "exceeds" in doc["error"]


def test_grpc_rejects_message_over_cap_when_larger_than_limit(server):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    big = np.zeros((64, 1, 64, 80), np.float32)  # 1.3 MB > 1 MiB
    inp = grpcclient.InferInput("pixels", list(big.shape), "FP32")
    inp.set_data_from_numpy(big)
    with pytest.raises(InferenceServerException) as info:
        client.infer("digits", [inp])
    assert "RESOURCE_EXHAUSTED" in str(info.value.status())


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_runtime_failure_is_internal_without_traceback_when_model_fails(server, protocol):
    mod = httpclient if protocol == "http" else grpcclient
    client = mod.InferenceServerClient(server.http_url if protocol == "http" else server.grpc_url)
    bad = mod.InferInput("x", [1, 2], "FP32")
    bad.set_data_from_numpy(np.ones((1, 2), np.float32))
    with pytest.raises(InferenceServerException) as info:
        client.infer("fragile", [bad])
    status = str(info.value.status())
    assert ("500" in status) if protocol == "http" else ("INTERNAL" in status)
    assert "Traceback" not in str(info.value)
    good = mod.InferInput("x", [3, 2], "FP32")
    good.set_data_from_numpy(np.arange(6, dtype=np.float32).reshape(3, 2))
    np.testing.assert_array_equal(
        client.infer("fragile", [good]).as_numpy("y"), np.arange(6).reshape(3, 2)
    )


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_queue_full_is_unavailable_when_flooded(server, protocol):
    from rayfront.export.demos.minilm import tokenize

    tokens = tokenize(["a long sentence " * 40] * 16)  # max_batch_size 16, ~160 tokens
    mod = httpclient if protocol == "http" else grpcclient

    def one(_: int) -> str:
        client = mod.InferenceServerClient(
            server.http_url if protocol == "http" else server.grpc_url
        )
        inputs = []
        for name, arr in tokens.items():
            inp = mod.InferInput(name, list(arr.shape), "INT64")
            inp.set_data_from_numpy(arr.astype(np.int64))
            inputs.append(inp)
        try:
            client.infer("minilm_q", inputs)
            return "ok"
        except InferenceServerException as exc:
            return str(exc.status())

    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        outcomes = list(pool.map(one, range(24)))
    unavailable = "503" if protocol == "http" else "UNAVAILABLE"
    assert "ok" in outcomes, outcomes
    assert any(unavailable in o for o in outcomes), outcomes
    assert all(o == "ok" or unavailable in o for o in outcomes), outcomes


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_request_timeout_expires_in_queue_when_model_busy(server, protocol):
    """A request whose `timeout` (microseconds) runs out while queued gets a clear 503."""
    from rayfront.export.demos.minilm import tokenize

    tokens = {
        k: v.astype(np.int64) for k, v in tokenize(["a long sentence to encode " * 30] * 16).items()
    }
    mod = httpclient if protocol == "http" else grpcclient
    url = server.http_url if protocol == "http" else server.grpc_url

    def inputs() -> list:
        out = []
        for name, arr in tokens.items():
            inp = mod.InferInput(name, list(arr.shape), "INT64")
            inp.set_data_from_numpy(arr)
            out.append(inp)
        return out

    def busy(_: int) -> None:
        mod.InferenceServerClient(url).infer("minilm", inputs())

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        backlog = [pool.submit(busy, i) for i in range(8)]
        time.sleep(0.3)
        with pytest.raises(InferenceServerException) as info:
            mod.InferenceServerClient(url).infer("minilm", inputs(), timeout=1000)
        for f in backlog:
            f.result(timeout=120)
    status = str(info.value.status())
    assert ("503" in status) if protocol == "http" else ("DEADLINE_EXCEEDED" in status)
    assert "timed out" in str(info.value) and "minilm" in str(info.value)
