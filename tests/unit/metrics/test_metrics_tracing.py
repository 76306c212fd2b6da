"""Request tracing: stage spans that add up, sampling, W3C parents, JSONL and OTLP export."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from rayfront.tracing import StageTiming, Tracer, TracingSettings, stage_spans

PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"


def _traceparent(sampled: bool) -> dict[str, str]:
    return {"traceparent": f"00-{PARENT_TRACE}-{PARENT_SPAN}-{'01' if sampled else '00'}"}


def _spans(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_stage_spans_are_contiguous_and_add_up_when_request_completes():
    marks = {"start": 0, "decoded": 100, "validated": 150, "returned": 1150, "encoded": 1200}
    timing = StageTiming(queue_s=300e-9, compute_s=500e-9, batch_requests=4, batch_rows=7)
    spans = stage_spans(marks, timing, 1200)
    names = [s[0] for s in spans]
    assert names == ["decode", "validate", "transfer", "queue", "compute", "transfer", "encode"]
    for (_, _, end, _), (_, start, _, _) in itertools.pairwise(spans):
        assert end == start
    assert spans[0][1] == 0 and spans[-1][2] == 1200
    durations = {name: end - start for name, start, end, _ in spans if name != "transfer"}
    assert durations == {"decode": 100, "validate": 50, "queue": 300, "compute": 500, "encode": 50}
    # The 200 ns the replica did not account for is the two transfer legs.
    assert sum(e - s for n, s, e, _ in spans if n == "transfer") == 200
    assert spans[4][3] == {"batch.requests": 4, "batch.rows": 7}


def test_stage_spans_clamp_replica_times_when_they_exceed_the_round_trip():
    marks = {"start": 0, "decoded": 10, "validated": 20, "returned": 120, "encoded": 130}
    spans = stage_spans(marks, StageTiming(queue_s=1.0, compute_s=1.0), 130)
    by_name = {n: (s, e) for n, s, e, _ in spans if n in ("queue", "compute")}
    assert by_name["queue"] == (20, 120) and by_name["compute"] == (120, 120)


def test_stage_spans_end_with_error_stage_when_request_fails_after_decode():
    marks = {"start": 0, "decoded": 40}
    spans = stage_spans(marks, StageTiming(), 90)
    assert [(n, s, e) for n, s, e, _ in spans] == [("decode", 0, 40), ("error", 40, 90)]


def _tracer(tmp_path: Path, **kw: object) -> tuple[Tracer, Path]:
    path = tmp_path / "traces.jsonl"
    return Tracer(TracingSettings(jsonl_path=str(path), **kw), process="ingress-t"), path


def _run_one(tracer: Tracer, carrier: dict[str, str] | None, *, fail: bool = False) -> bool:
    trace = tracer.begin(carrier, "http")
    if trace is None:
        return False
    trace.mark("decoded")
    trace.annotate(model="digits", version="1")
    trace.mark("validated")
    trace.timing.fill([0.0001, 0.0002, 3, 5])
    trace.mark("returned")
    if fail:
        trace.finish(ValueError("boom"))
        return True
    trace.mark("encoded")
    trace.finish()
    trace.finish()  # idempotent: a second call writes nothing
    return True


def test_tracer_writes_a_child_tree_of_the_callers_span_when_traceparent_is_sampled(tmp_path):
    tracer, path = _tracer(tmp_path, sample_ratio=0.0)
    assert _run_one(tracer, _traceparent(True))
    assert tracer.flush()
    spans = _spans(path)
    root = next(s for s in spans if s["name"] == "infer")
    assert root["trace_id"] == PARENT_TRACE and root["parent_id"] == PARENT_SPAN
    assert root["attributes"]["model"] == "digits" and root["attributes"]["batch.rows"] == 5
    children = sorted((s for s in spans if s is not root), key=lambda s: s["start_ns"])
    assert [c["name"] for c in children] == [
        "decode",
        "validate",
        "transfer",
        "queue",
        "compute",
        "transfer",
        "encode",
    ]
    assert all(c["parent_id"] == root["span_id"] for c in children)
    assert sum(c["end_ns"] - c["start_ns"] for c in children) == root["end_ns"] - root["start_ns"]


def test_tracer_follows_the_callers_decision_when_traceparent_says_not_sampled(tmp_path):
    tracer, path = _tracer(tmp_path, sample_ratio=1.0)
    assert not _run_one(tracer, _traceparent(False))
    assert _run_one(tracer, None)  # no parent: the ratio decides (1.0: always)
    tracer.flush()
    assert {s["trace_id"] for s in _spans(path)} != {PARENT_TRACE}


def test_tracer_traces_nothing_when_ratio_is_zero_and_no_parent(tmp_path):
    tracer, path = _tracer(tmp_path, sample_ratio=0.0)
    assert not any(_run_one(tracer, None) for _ in range(50))
    tracer.flush()
    assert not path.exists() or path.read_text() == ""


def test_tracer_marks_root_as_error_when_request_fails(tmp_path):
    tracer, path = _tracer(tmp_path, sample_ratio=1.0)
    _run_one(tracer, None, fail=True)
    tracer.flush()
    root = next(s for s in _spans(path) if s["name"] == "infer")
    assert root["status"] == "ERROR" and root["attributes"]["error.type"] == "ValueError"


def test_tracing_settings_refuse_no_sink_and_relative_file_when_validated():
    with pytest.raises(ValueError, match="tracing needs otlp_endpoint or jsonl_path"):
        TracingSettings()
    with pytest.raises(ValueError, match=r"jsonl_path 'traces\.jsonl' must be absolute"):
        TracingSettings(jsonl_path="traces.jsonl")
    with pytest.raises(ValueError, match="less than or equal to 1"):
        TracingSettings(jsonl_path="/tmp/t.jsonl", sample_ratio=2)


@pytest.fixture
def collector() -> Iterator[tuple[str, list[bytes]]]:
    """A local OTLP/HTTP endpoint that keeps every body POSTed to /v1/traces."""
    bodies: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            if self.path == "/v1/traces":
                bodies.append(self.rfile.read(length))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1/traces", bodies
    finally:
        server.shutdown()


def test_tracer_exports_stage_spans_over_otlp_when_endpoint_is_set(collector):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    url, bodies = collector
    tracer = Tracer(TracingSettings(otlp_endpoint=url, sample_ratio=1.0), process="ingress-t")
    assert _run_one(tracer, _traceparent(True))
    assert tracer.flush()
    names = []
    for body in bodies:
        msg = ExportTraceServiceRequest.FromString(body)
        for rs in msg.resource_spans:
            attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
            assert attrs["service.name"] == "rayfront"
            for ss in rs.scope_spans:
                names += [s.name for s in ss.spans]
                assert {s.trace_id.hex() for s in ss.spans} == {PARENT_TRACE}
    assert sorted(names) == sorted(
        ["infer", "decode", "validate", "transfer", "queue", "compute", "transfer", "encode"]
    )
    tracer.shutdown()


def test_traced_ends_the_trace_with_the_handler_whether_it_fails_or_not(tmp_path):
    import asyncio

    from rayfront.tracing import traced

    tracer, path = _tracer(tmp_path, sample_ratio=1.0)
    seen = []

    async def ok(trace):
        seen.append(trace is not None)
        trace.mark("decoded")
        return "answer"

    async def boom(trace):
        raise KeyError("x")

    assert asyncio.run(traced(tracer, None, "grpc", ok)) == "answer"
    with pytest.raises(KeyError):
        asyncio.run(traced(tracer, None, "grpc", boom))
    assert asyncio.run(traced(None, None, "grpc", lambda t: asyncio.sleep(0, "off"))) == "off"
    tracer.flush()
    roots = [s for s in _spans(path) if s["name"] == "infer"]
    assert [r["status"] for r in roots] == ["UNSET", "ERROR"] and seen == [True]
