"""Request tracing through the real server: W3C parents over HTTP and gRPC, stage spans
that add up to the request, and nothing written for requests nobody asked to trace.

The shared server runs with ``--trace-file`` and ``--trace-sample-ratio 0``: a request is
traced exactly when its caller's ``traceparent`` says sampled.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

pytestmark = [pytest.mark.ray, pytest.mark.slow]

STAGES = ["decode", "validate", "transfer", "queue", "compute", "transfer", "encode"]


def _trace_file(server) -> Path:
    return server.log.parent / "traces.jsonl"


def _spans_of(server, trace_id: str, want: int, timeout_s: float = 20.0) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    spans: list[dict] = []
    while time.monotonic() < deadline:
        path = _trace_file(server)
        if path.exists():
            spans = [
                s
                for s in map(json.loads, path.read_text().splitlines())
                if s["trace_id"] == trace_id
            ]
            if len(spans) >= want:
                return spans
        time.sleep(0.2)
    raise AssertionError(f"{len(spans)} of {want} spans of trace {trace_id} after {timeout_s}s")


def _infer(server, protocol: str, headers: dict[str, str] | None, rows: int) -> float:
    x = np.random.default_rng(rows).random((rows, 1, 8, 8), dtype=np.float32)
    mod = httpclient if protocol == "http" else grpcclient
    url = server.http_url if protocol == "http" else server.grpc_url
    client = mod.InferenceServerClient(url)
    inp = mod.InferInput("pixels", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    start = time.perf_counter_ns()
    result = client.infer("digits", [inp], headers=headers)
    elapsed = time.perf_counter_ns() - start
    assert result.as_numpy("logits").shape == (rows, 10)
    return elapsed


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_trace_tree_adds_up_to_the_request_when_caller_sends_sampled_traceparent(server, protocol):
    trace_id, parent = os.urandom(16).hex(), os.urandom(8).hex()
    headers = {"traceparent": f"00-{trace_id}-{parent}-01"}
    client_ns = _infer(server, protocol, headers, rows=3)
    spans = _spans_of(server, trace_id, want=1 + len(STAGES))

    root = next(s for s in spans if s["name"] == "infer")
    assert root["parent_id"] == parent  # a child of the caller's span
    attrs = root["attributes"]
    assert attrs["model"] == "digits" and attrs["version"] == "1"
    assert attrs["rpc.system"] == protocol and attrs["batch.rows"] >= 3
    children = sorted((s for s in spans if s is not root), key=lambda s: s["start_ns"])
    assert [c["name"] for c in children] == STAGES
    assert all(c["parent_id"] == root["span_id"] for c in children)
    # Contiguous stages: they tile the request exactly.
    assert children[0]["start_ns"] == root["start_ns"]
    assert children[-1]["end_ns"] == root["end_ns"]
    for before, after in itertools.pairwise(children):
        assert before["end_ns"] == after["start_ns"]
    total = root["end_ns"] - root["start_ns"]
    assert sum(c["end_ns"] - c["start_ns"] for c in children) == total
    # The server's part is inside what the client waited, and the model really ran.
    assert 0 < total <= client_ns
    compute = next(c for c in children if c["name"] == "compute")
    assert compute["end_ns"] > compute["start_ns"]
    assert compute["attributes"]["batch.rows"] >= 3


def test_no_spans_are_written_when_requests_carry_no_or_unsampled_traceparent(server):
    trace_id = os.urandom(16).hex()
    _infer(server, "http", {"traceparent": f"00-{trace_id}-{os.urandom(8).hex()}-00"}, rows=1)
    _infer(server, "grpc", None, rows=1)
    # A sampled request after them: once its spans are out, theirs would have been too.
    marker = os.urandom(16).hex()
    _infer(server, "http", {"traceparent": f"00-{marker}-{os.urandom(8).hex()}-01"}, rows=1)
    _spans_of(server, marker, want=1 + len(STAGES))
    traced = {json.loads(line)["trace_id"] for line in _trace_file(server).read_text().splitlines()}
    assert trace_id not in traced


def test_failed_request_is_traced_as_an_error_when_input_is_bad(server):
    trace_id = os.urandom(16).hex()
    client = httpclient.InferenceServerClient(server.http_url)
    inp = httpclient.InferInput("pixels", [1, 3], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 3), np.float32))
    with pytest.raises(Exception, match="pixels"):
        client.infer(
            "digits", [inp], headers={"traceparent": f"00-{trace_id}-{os.urandom(8).hex()}-01"}
        )
    spans = _spans_of(server, trace_id, want=1)
    root = next(s for s in spans if s["name"] == "infer")
    assert root["status"] == "ERROR" and root["attributes"]["error.type"] == "InvalidArgumentError"


@pytest.mark.parametrize(
    "traceparent",
    [
        "garbage",
        "ff-" + "0" * 32 + "-" + "0" * 16 + "-01",
        "00-" + "z" * 32 + "-1234-01",
        "x" * 8000,
    ],
    ids=["garbage", "bad-version", "bad-hex", "huge"],
)
def test_malformed_traceparent_is_ignored_and_the_request_answered_when_sent(
    server, ort_sessions, traceparent
):
    x = np.random.default_rng(5).random((2, 1, 8, 8), dtype=np.float32)
    client = httpclient.InferenceServerClient(server.http_url)
    inp = httpclient.InferInput("pixels", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer("digits", [inp], headers={"traceparent": traceparent})
    np.testing.assert_allclose(
        result.as_numpy("logits"), ort_sessions["digits"].run(["logits"], {"pixels": x})[0],
        rtol=1e-5, atol=1e-5,
    )  # fmt: skip
