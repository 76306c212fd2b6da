"""Hostile inputs over HTTP and gRPC: every one gets a clear 4xx, and the server stays right.

Table-driven, against the shared real server (1 MiB body cap, admin token set). Each case
asserts the status, a fragment of the message (which names the input and the model), that
no traceback leaks, and then that the server still answers a fresh request correctly.
"""

from __future__ import annotations

import gzip
import time

import pytest
from hostile import (
    assert_still_right,
    binary_body,
    bytes_elements,
    grpc_call,
    http_call,
    infer_request,
    json_body,
)

pytestmark = [pytest.mark.ray, pytest.mark.slow]

INFER = "/v2/models/digits/infer"
PIX = {"name": "pixels", "datatype": "FP32"}
ZEROS = [0.0] * 64
JSON = {"Content-Type": "application/json"}
MiB = 1 << 20


def _pix(shape, data=None, **kw):
    return {**PIX, "shape": shape, "data": ZEROS if data is None else data, **kw}


def _bin(shape, blob, size=None, datatype="FP32", name="pixels", extra_inputs=(), **header):
    head = {
        "inputs": [
            {
                "name": name,
                "datatype": datatype,
                "shape": shape,
                "parameters": {"binary_data_size": len(blob) if size is None else size},
            },
            *extra_inputs,
        ],
        **header,
    }
    return binary_body(head, blob)


HTTP_CASES = {
    # name: (method, path, body, headers, status, fragment)
    "shape 2^31 x 2^31": ("POST", INFER, json_body([_pix([2**31, 2**31])]), JSON, 400,
                          "shape [2147483648,2147483648] needs 4611686018427387904 elements"),
    "shape 2^63-1": ("POST", INFER, json_body([_pix([2**63 - 1])]), JSON, 400,
                     "needs 9223372036854775807 elements"),
    "shape 2^64": ("POST", INFER, json_body([_pix([2**64])]), JSON, 400,
                   "shape must be a list of non-negative integers"),
    "negative dim": ("POST", INFER, json_body([_pix([-1, 1, 8, 8])]), JSON, 400,
                     "non-negative integers"),
    "65 dims": ("POST", INFER, json_body([_pix([1] * 65)]), JSON, 400,
                "shape has 65 dimensions; at most 64"),
    "1000 dims": ("POST", INFER, json_body([_pix([1] * 1000)]), JSON, 400,
                  "shape has 1000 dimensions"),
    "string shape": ("POST", INFER, json_body([_pix("1,1,8,8")]), JSON, 400,
                     "shape must be a list of integers"),
    "binary 2^40 bytes claimed": (
        "POST", INFER, *_bin([1, 1, 8, 8], b"\0" * 256, size=2**40), 400,
        "input 'pixels' of model 'digits'"),
    "binary shape 2^40": ("POST", INFER, *_bin([2**40, 1, 8, 8], b"\0" * 256), 400,
                          "input 'pixels' of model 'digits': expected"),
    "unknown datatype": ("POST", INFER, json_body([{**_pix([1, 1, 8, 8]), "datatype": "FP128"}]),
                         JSON, 400, "FP128"),
    "wrong datatype": ("POST", INFER, json_body([{**_pix([1, 1, 8, 8]), "datatype": "INT64"}]),
                       JSON, 400, "input 'pixels' of model 'digits'"),
    "strings as FP32": ("POST", INFER, json_body([_pix([1, 1, 8, 8], ["NaN"] * 64)]), JSON, 400,
                        "FP32 data must be numbers, got strings"),
    "byte size short": ("POST", INFER, *_bin([1, 1, 8, 8], b"\0" * 255), 400,
                        "expected 256 bytes for FP32[1,1,8,8], got 255"),
    "byte size past body": ("POST", INFER, *_bin([1, 1, 8, 8], b"\0" * 256, size=512), 400,
                            "input 'pixels' of model 'digits'"),
    "byte size negative": ("POST", INFER, *_bin([1, 1, 8, 8], b"\0" * 256, size=-4), 400,
                           "binary_data_size"),
    "extra bytes after inputs": (
        "POST", INFER, *binary_body(
            {"inputs": [{**PIX, "shape": [1, 1, 8, 8], "parameters": {"binary_data_size": 256}}]},
            b"\0" * 300), 400, "bytes"),
    "BYTES prefix beyond data": ("POST", INFER, *_bin([1], b"\xff\xff\xff\x7f" + b"ab",
                                                      datatype="BYTES"), 400,
                                 "BYTES element 0 claims 2147483647 bytes"),
    "BYTES count lie": ("POST", INFER, *_bin([4], bytes_elements(b"a", b"b"), datatype="BYTES"),
                        400, "BYTES data holds 2 elements, expected 4"),
    "BYTES trailing garbage": ("POST", INFER, *_bin([1], bytes_elements(b"a") + b"zz",
                                                    datatype="BYTES"), 400, "bytes after"),
    "body over cap": ("POST", INFER, b"{" + b" " * (2 * MiB) + b"}", JSON, 400,
                      "exceeds the 1048576-byte limit"),
    "gzip bomb": ("POST", INFER, gzip.compress(b" " * (64 * MiB)),
                  {**JSON, "Content-Encoding": "gzip"}, 400,
                  "decompressed request body exceeds the 1048576-byte limit"),
    "bad gzip": ("POST", INFER, b"\x1f\x8b not gzip", {**JSON, "Content-Encoding": "gzip"}, 400,
                 "gzip"),
    "unknown encoding": ("POST", INFER, b"{}", {**JSON, "Content-Encoding": "br"}, 400,
                         "unsupported Content-Encoding 'br'"),
    "JSON depth": ("POST", INFER, b'{"inputs":' + b"[" * 5000 + b"]" * 5000 + b"}", JSON, 400,
                   "depth limit"),
    "JSON not an object": ("POST", INFER, b"[1, 2]", JSON, 400, "must be a JSON object"),
    "JSON invalid": ("POST", INFER, b'{"inputs": [', JSON, 400, "not valid JSON"),
    "header length beyond body": ("POST", INFER, b"{}", {"Inference-Header-Content-Length": "99"},
                                  400, "Inference-Header-Content-Length 99 exceeds"),
    "header length negative": ("POST", INFER, b"{}", {"Inference-Header-Content-Length": "-1"},
                               400, "Inference-Header-Content-Length"),
    "header length not a number": ("POST", INFER, b"{}",
                                   {"Inference-Header-Content-Length": "1e3"}, 400,
                                   "Inference-Header-Content-Length"),
    "duplicate input": ("POST", INFER, json_body([_pix([1, 1, 8, 8]), _pix([1, 1, 8, 8])]), JSON,
                        400, "input 'pixels' of model 'digits': given more than once"),
    "unknown input": ("POST", INFER, json_body([_pix([1, 1, 8, 8]),
                                               {**_pix([1, 1, 8, 8]), "name": "extra"}]),
                      JSON, 400, "input 'extra' of model 'digits'"),
    "missing input": ("POST", "/v2/models/multi/infer",
                      json_body([{"name": "features", "datatype": "FP32", "shape": [1, 4],
                                  "data": [0.0] * 4}]), JSON, 400,
                      "input 'ids' of model 'multi': missing required input"),
    "unknown output": ("POST", INFER, json_body([_pix([1, 1, 8, 8])],
                                                outputs=[{"name": "nope"}]), JSON, 400,
                       "'nope'"),
    "duplicate output": ("POST", INFER, json_body([_pix([1, 1, 8, 8])],
                                                  outputs=[{"name": "logits"}] * 2), JSON, 400,
                         "'logits'"),
    "classification negative": ("POST", INFER, json_body(
        [_pix([1, 1, 8, 8])], outputs=[{"name": "logits", "parameters": {"classification": -1}}]),
        JSON, 400, "'classification' must be a non-negative integer"),
    "timeout not a number": ("POST", INFER, json_body([_pix([1, 1, 8, 8])],
                                                      parameters={"timeout": "soon"}), JSON, 400,
                             "parameter 'timeout'"),
    "model name ..": ("POST", "/v2/models/../infer", json_body([_pix([1, 1, 8, 8])]), JSON, 404,
                      ""),
    "model name %2e%2e": ("POST", "/v2/models/%2e%2e/infer", json_body([_pix([1, 1, 8, 8])]),
                          JSON, 404, ""),
    "model name NUL": ("POST", "/v2/models/dig%00its/infer", json_body([_pix([1, 1, 8, 8])]),
                       JSON, 404, ""),
    "model name absolute path": ("POST", "/v2/models//etc/passwd/infer",
                                 json_body([_pix([1, 1, 8, 8])]), JSON, 404, ""),
    "model name traversal": ("POST", "/v2/models/x%2f..%2fdigits/infer",
                             json_body([_pix([1, 1, 8, 8])]), JSON, 404, ""),
    "metadata traversal": ("GET", "/v2/models/%2e%2e%2f%2e%2e%2fetc", b"", {}, 404, ""),
    "config traversal": ("GET", "/v2/models/..%2fdigits/config", b"", {}, 404, ""),
    "load traversal": ("POST", "/v2/repository/models/..%2f..%2ftmp/load", b"{}",
                       {"Authorization": "Bearer integration-secret"}, 404, ""),
    "unknown model": ("POST", "/v2/models/nope/infer", json_body([_pix([1, 1, 8, 8])]), JSON, 404,
                      "Request for unknown model: 'nope' is not found"),
    "unknown version": ("POST", "/v2/models/digits/versions/77/infer",
                        json_body([_pix([1, 1, 8, 8])]), JSON, 404,
                        "Request for unknown model: 'digits' version 77 is not found"),
    "unknown route": ("GET", "/v2/nothing/here", b"", {}, 404, ""),
    "wrong method": ("GET", INFER, b"", {}, 405, ""),
    "ready unknown model": ("GET", "/v2/models/nope/ready", b"", {}, 404,
                            "Request for unknown model"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(HTTP_CASES))
def test_http_hostile_input_gets_clear_4xx_and_server_stays_right(server, ort_sessions, case):
    method, path, body, headers, status, fragment = HTTP_CASES[case]
    start = time.monotonic()
    answer = http_call(server.http_url, method, path, body, headers)
    elapsed = time.monotonic() - start
    assert answer.status == status, (case, answer.status, answer.body[:300])
    assert fragment in answer.error, (case, answer.error)
    assert b"Traceback" not in answer.body and b'File "' not in answer.body
    assert elapsed < 5.0, f"{case} took {elapsed:.1f}s"
    assert_still_right(server, ort_sessions["digits"], seed=len(case))


def _grpc_cases():
    raw = b"\0" * 256
    cases = {}

    def add(name, msg, code, fragment, raw_contents=(raw,)):
        if raw_contents is not None:
            msg.raw_input_contents.extend(raw_contents)
        cases[name] = (msg, code, fragment)

    add(
        "shape 2^31 x 2^31",
        infer_request("digits", ("pixels", "FP32", [2**31, 2**31])),
        "INVALID_ARGUMENT",
        "expected 18446744073709551616 bytes",
    )
    add(
        "shape 2^63-1",
        infer_request("digits", ("pixels", "FP32", [2**63 - 1])),
        "INVALID_ARGUMENT",
        "input 'pixels' of model 'digits'",
    )
    add(
        "negative dim",
        infer_request("digits", ("pixels", "FP32", [-1, 1, 8, 8])),
        "INVALID_ARGUMENT",
        "non-negative integers",
    )
    add(
        "65 dims",
        infer_request("digits", ("pixels", "FP32", [1] * 65)),
        "INVALID_ARGUMENT",
        "shape has 65 dimensions",
    )
    add(
        "1000 dims",
        infer_request("digits", ("pixels", "FP32", [1] * 1000)),
        "INVALID_ARGUMENT",
        "shape has 1000 dimensions",
    )
    add(
        "unknown datatype",
        infer_request("digits", ("pixels", "FP128", [1, 1, 8, 8])),
        "INVALID_ARGUMENT",
        "FP128",
    )
    add(
        "byte size short",
        infer_request("digits", ("pixels", "FP32", [1, 1, 8, 8])),
        "INVALID_ARGUMENT",
        "expected 256 bytes for FP32[1,1,8,8], got 255",
        (b"\0" * 255,),
    )
    add(
        "raw count mismatch",
        infer_request("digits", ("pixels", "FP32", [1, 1, 8, 8])),
        "INVALID_ARGUMENT",
        "2 raw_input_contents for 1 inputs",
        (raw, raw),
    )
    add(
        "no contents",
        infer_request("digits", ("pixels", "FP32", [1, 1, 8, 8])),
        "INVALID_ARGUMENT",
        "needs 64 elements, fp32_contents has 0",
        None,
    )
    add(
        "BYTES prefix beyond data",
        infer_request("digits", ("pixels", "BYTES", [1])),
        "INVALID_ARGUMENT",
        "BYTES element 0 claims",
        (b"\xff\xff\xff\x7fab",),
    )
    add(
        "BYTES count lie",
        infer_request("digits", ("pixels", "BYTES", [4])),
        "INVALID_ARGUMENT",
        "BYTES data holds 2 elements, expected 4",
        (bytes_elements(b"a", b"b"),),
    )
    add(
        "duplicate input",
        infer_request("digits", ("pixels", "FP32", [1, 1, 8, 8]), ("pixels", "FP32", [1, 1, 8, 8])),
        "INVALID_ARGUMENT",
        "given more than once",
        (raw, raw),
    )
    add(
        "unknown input",
        infer_request("digits", ("pixels", "FP32", [1, 1, 8, 8]), ("extra", "FP32", [1, 1, 8, 8])),
        "INVALID_ARGUMENT",
        "input 'extra' of model 'digits'",
        (raw, raw),
    )
    msg = infer_request("digits", ("pixels", "FP32", [1, 1, 8, 8]))
    msg.outputs.add().name = "nope"
    add("unknown output", msg, "INVALID_ARGUMENT", "'nope'")
    add(
        "no model name",
        infer_request("", ("pixels", "FP32", [1, 1, 8, 8])),
        "INVALID_ARGUMENT",
        "no model_name",
    )
    add(
        "model name ..",
        infer_request("..", ("pixels", "FP32", [1, 1, 8, 8])),
        "NOT_FOUND",
        "Request for unknown model",
    )
    add(
        "model name traversal",
        infer_request("../../etc/passwd", ("pixels", "FP32", [1, 1, 8, 8])),
        "NOT_FOUND",
        "Request for unknown model",
    )
    add(
        "model name NUL",
        infer_request("dig\0its", ("pixels", "FP32", [1, 1, 8, 8])),
        "NOT_FOUND",
        "Request for unknown model",
    )
    add(
        "unknown version",
        infer_request("digits", ("pixels", "FP32", [1, 1, 8, 8]), model_version="77"),
        "NOT_FOUND",
        "'digits' version 77 is not found",
    )
    add(
        "message over cap",
        infer_request("digits", ("pixels", "FP32", [1, 1, 8, 8])),
        "RESOURCE_EXHAUSTED",
        "",
        (b"\0" * (2 * MiB),),
    )
    cases["garbage bytes"] = (
        b"\xff\xff\xff\xff garbage",
        "INVALID_ARGUMENT",
        "ModelInfer: the request is not a valid ModelInferRequest",
    )
    return cases


GRPC_CASES = _grpc_cases()


@pytest.mark.parametrize("case", sorted(GRPC_CASES))
def test_grpc_hostile_input_gets_clear_status_and_server_stays_right(server, ort_sessions, case):
    message, want_code, fragment = GRPC_CASES[case]
    start = time.monotonic()
    code, details = grpc_call(server.grpc_url, "ModelInfer", message)
    elapsed = time.monotonic() - start
    assert (code, fragment in details) == (want_code, True), (case, code, details)
    assert "Traceback" not in details
    assert elapsed < 5.0, f"{case} took {elapsed:.1f}s"
    assert_still_right(server, ort_sessions["digits"], seed=len(case))
