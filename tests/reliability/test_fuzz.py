"""A bounded, seeded fuzz over every /v2 route (HTTP) and every gRPC method.

Requests are mutations of valid ones (bytes flipped, cut, spliced, repeated), random
routes, methods, headers and model names. Any 5xx (gRPC UNKNOWN, INTERNAL, DATA_LOSS), any
answer slower than a few seconds, any traceback in an answer, or a server that stops
answering correctly fails the test. Admin calls carry no token or a wrong one, so the fuzz
cannot unload what the other tests use; the seed is fixed, so a failure reproduces.
"""

from __future__ import annotations

import gzip
import json
import random
import time

import numpy as np
import pytest
from hostile import assert_still_right, grpc_call, http_call, infer_request
from tritonclient.grpc import service_pb2 as pb

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(600)]

SEED = 20261201
HTTP_REQUESTS = 600
GRPC_REQUESTS = 300
SLOW_S = 5.0
MODELS = ["digits", "multi", "minilm", "nope", "", "..", "%2e%2e", "a" * 300, "dig%00its"]


def _valid_bodies() -> list[tuple[bytes, dict[str, str]]]:
    x = np.random.default_rng(1).random((2, 1, 8, 8), dtype=np.float32)
    plain = json.dumps(
        {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [2, 1, 8, 8],
                     "data": x.ravel().tolist()}],
         "outputs": [{"name": "logits", "parameters": {"classification": 3}}],
         "parameters": {"timeout": 5_000_000}}
    ).encode()  # fmt: skip
    head = json.dumps(
        {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [2, 1, 8, 8],
                     "parameters": {"binary_data_size": x.nbytes}}],
         "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]}
    ).encode()  # fmt: skip
    binary = head + x.tobytes()
    ids = json.dumps(
        {"inputs": [
            {"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]},
            {"name": "ids", "datatype": "INT64", "shape": [1, 3], "data": [1, 2, 3]}]}
    ).encode()  # fmt: skip
    return [
        (plain, {"Content-Type": "application/json"}),
        (binary, {"Inference-Header-Content-Length": str(len(head))}),
        (ids, {"Content-Type": "application/json"}),
        (gzip.compress(plain), {"Content-Encoding": "gzip"}),
    ]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(6)
        if not out:
            out += bytes([rng.randrange(256)])
        pos = rng.randrange(len(out))
        if kind == 0:
            out[pos] = rng.randrange(256)
        elif kind == 1:
            del out[pos:]
        elif kind == 2:
            out[pos:pos] = out[: rng.randint(1, 64)]
        elif kind == 3:
            out[pos:pos] = rng.choice([b"[", b"{", b'"', b"-1", b"1e400", b"\x00", b"9" * 30])
        elif kind == 4:
            del out[pos : pos + rng.randint(1, 16)]
        else:
            out[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return bytes(out)


def _http_request(rng: random.Random, bodies: list[tuple[bytes, dict[str, str]]]):
    model = rng.choice(MODELS)
    base = f"/v2/models/{model}"
    routes = [
        ("GET", "/v2"), ("GET", "/v2/health/live"), ("GET", "/v2/health/ready"),
        ("GET", base), ("GET", base + "/ready"), ("GET", base + "/config"),
        ("GET", base + "/stats"), ("GET", base + "/versions/1"), ("GET", "/v2/models/stats"),
        ("POST", "/v2/repository/index"), ("POST", f"/v2/repository/models/{model}/load"),
        ("POST", f"/v2/repository/models/{model}/unload"), ("GET", "/metrics"),
        ("GET", "/v2/systemsharedmemory/status"),
        ("POST", f"/v2/systemsharedmemory/region/{model}/register"),
        ("POST", "/v2/systemsharedmemory/unregister"), ("GET", f"/v2/rollouts/{model}"),
        ("POST", f"/v2/rollouts/{model}/weights"), ("POST", base + "/infer"),
        ("POST", base + "/versions/1/infer"), ("POST", base + "/infer"),
        ("POST", base + "/infer"), ("POST", base + "/infer"),
    ]  # fmt: skip
    method, path = rng.choice(routes)
    if rng.random() < 0.1:
        method = rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH"])
    if rng.random() < 0.1:
        path = _mutate(rng, path.encode()).decode("latin-1").replace(" ", "%20")
        path = "/" + "".join(c if 33 <= ord(c) < 127 else f"%{ord(c):02x}" for c in path)
    body, headers = rng.choice(bodies)
    headers = dict(headers)
    if rng.random() < 0.8:
        body = _mutate(rng, body)
    if rng.random() < 0.15:
        headers["Inference-Header-Content-Length"] = rng.choice(
            ["0", "-5", "99999999999", "abc", str(rng.randrange(4096)), ""]
        )
    if rng.random() < 0.05:
        headers["Content-Encoding"] = rng.choice(["gzip", "deflate", "br", "gzip, gzip"])
    if ("unload" in path or "load" in path or "weights" in path) and rng.random() < 0.5:
        headers["Authorization"] = "Bearer wrong-token"
    return method, path, body if method != "GET" else b"", headers


@pytest.mark.timeout(600)
def test_http_fuzz_never_answers_5xx_hangs_or_leaks(server, ort_sessions):
    rng = random.Random(SEED)
    bodies = _valid_bodies()
    statuses: dict[int, int] = {}
    for i in range(HTTP_REQUESTS):
        method, path, body, headers = _http_request(rng, bodies)
        start = time.monotonic()
        answer = http_call(server.http_url, method, path, body, headers, timeout=30)
        elapsed = time.monotonic() - start
        statuses[answer.status] = statuses.get(answer.status, 0) + 1
        where = f"request {i}: {method} {path[:120]} -> {answer.status} {answer.body[:200]!r}"
        assert answer.status < 500, where
        assert elapsed < SLOW_S, f"{where} took {elapsed:.1f}s"
        assert b"Traceback" not in answer.body, where
        if i % 100 == 99:
            assert_still_right(server, ort_sessions["digits"], seed=i)
    assert_still_right(server, ort_sessions["digits"])
    # The fuzz reached past the parsers: some requests were still valid enough to answer.
    assert statuses.get(200, 0) > 20 and statuses.get(400, 0) > 100, statuses


GRPC_METHODS = [
    ("ServerLive", pb.ServerLiveRequest()),
    ("ServerReady", pb.ServerReadyRequest()),
    ("ModelReady", pb.ModelReadyRequest(name="digits")),
    ("ServerMetadata", pb.ServerMetadataRequest()),
    ("ModelMetadata", pb.ModelMetadataRequest(name="digits")),
    ("ModelConfig", pb.ModelConfigRequest(name="digits")),
    ("ModelStatistics", pb.ModelStatisticsRequest(name="digits")),
    ("RepositoryIndex", pb.RepositoryIndexRequest()),
    ("RepositoryModelLoad", pb.RepositoryModelLoadRequest(model_name="digits")),
    ("RepositoryModelUnload", pb.RepositoryModelUnloadRequest(model_name="digits")),
    ("SystemSharedMemoryStatus", pb.SystemSharedMemoryStatusRequest()),
    ("SystemSharedMemoryRegister", pb.SystemSharedMemoryRegisterRequest(name="r", key="/r")),
    ("SystemSharedMemoryUnregister", pb.SystemSharedMemoryUnregisterRequest(name="r")),
]


def _infer_message() -> pb.ModelInferRequest:
    x = np.random.default_rng(2).random((2, 1, 8, 8), dtype=np.float32)
    msg = infer_request("digits", ("pixels", "FP32", [2, 1, 8, 8]), id="fuzz")
    msg.raw_input_contents.append(x.tobytes())
    msg.outputs.add().name = "logits"
    msg.parameters["timeout"].int64_param = 5_000_000
    return msg


@pytest.mark.timeout(600)
def test_grpc_fuzz_never_answers_unknown_internal_or_hangs(server, ort_sessions):
    rng = random.Random(SEED + 1)
    valid = _infer_message().SerializeToString()
    codes: dict[str, int] = {}
    for i in range(GRPC_REQUESTS):
        if rng.random() < 0.75:
            method, payload = "ModelInfer", _mutate(rng, valid)
        else:
            method, message = rng.choice(GRPC_METHODS)
            payload = _mutate(rng, message.SerializeToString()) if rng.random() < 0.7 else message
        start = time.monotonic()
        code, details = grpc_call(server.grpc_url, method, payload, timeout=30)
        elapsed = time.monotonic() - start
        codes[code] = codes.get(code, 0) + 1
        where = f"request {i}: {method} -> {code} {details[:200]!r}"
        assert code not in ("UNKNOWN", "INTERNAL", "DATA_LOSS", "DEADLINE_EXCEEDED"), where
        assert elapsed < SLOW_S, f"{where} took {elapsed:.1f}s"
        assert "Traceback" not in details, where
        if i % 100 == 99:
            assert_still_right(server, ort_sessions["digits"], seed=i)
    assert_still_right(server, ort_sessions["digits"])
    assert codes.get("OK", 0) > 10 and codes.get("INVALID_ARGUMENT", 0) > 50, codes
