"""OpenTelemetry traces of inference requests: one span per stage, W3C context in and out.

A sampled request carries a :class:`RequestTrace` from the moment its protocol handler
starts until its answer is encoded. The stages are marked with wall-clock stamps where
they happen (protocol handler, data plane), and the replica reports how long the request
waited in its batcher and how long its batch computed (:class:`StageTiming`, carried back
in the transport's answer as durations, so no clock has to agree across processes). When
the request ends, :meth:`RequestTrace.finish` writes the tree in one go::

    infer                        model, version, protocol, request id, batch size
      decode                     wire bytes -> tensors
      validate                   model/version lookup, shape and dtype checks, routing
      transfer  (direction=in)   ingress -> replica (half the round trip not spent below)
      queue                      waiting in the replica's dynamic batcher
      compute                    the batch this request rode in: collate, run, split
      transfer  (direction=out)  replica -> ingress
      encode                     tensors -> wire bytes

The children are contiguous, so they add up to the root exactly. The caller's
``traceparent`` (HTTP header or gRPC metadata) makes ``infer`` its child; sampling is
parent-based by default (a sampled caller is always traced) with ``sample_ratio`` for
requests that arrive without one. Spans go to an OTLP/HTTP collector when
``otlp_endpoint`` is set, else to a JSONL file (one span per line). Nothing here runs,
and opentelemetry is not imported, unless tracing is configured.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

logger = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
#: The W3C trace-context fields a caller may send (HTTP headers, gRPC metadata).
TRACE_HEADERS = (TRACEPARENT, "tracestate")

_T = TypeVar("_T")


class TracingSettings(BaseModel):
    """Where traces go and which requests are traced."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sample_ratio: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="Share of requests without a sampled traceparent that are traced.",
    )
    parent_based: bool = Field(
        default=True,
        description="Trace every request whose traceparent says sampled (and none that says not).",
    )
    otlp_endpoint: str = Field(
        default="",
        description="OTLP/HTTP traces URL, e.g. http://collector:4318/v1/traces; empty = JSONL.",
    )
    jsonl_path: str = Field(
        default="",
        description="Absolute path of the JSONL span file, used when otlp_endpoint is empty.",
    )
    service_name: str = Field(default="rayfront", min_length=1, description="service.name.")

    @model_validator(mode="after")
    def _one_sink(self) -> TracingSettings:
        if not self.otlp_endpoint and not self.jsonl_path:
            raise ValueError("tracing needs otlp_endpoint or jsonl_path (where spans go)")
        if self.jsonl_path and not Path(self.jsonl_path).is_absolute():
            raise ValueError(
                f"tracing jsonl_path {self.jsonl_path!r} must be absolute (replicas run in "
                "other working directories)"
            )
        return self


@dataclass(slots=True)
class StageTiming:
    """What the replica measured for one request, filled in by its batcher."""

    queue_s: float = 0.0
    compute_s: float = 0.0
    batch_requests: int = 0
    batch_rows: int = 0

    def to_wire(self) -> list[float]:
        return [self.queue_s, self.compute_s, self.batch_requests, self.batch_rows]

    def fill(self, wire: Sequence[float]) -> None:
        """Take a replica's report (the transport answer's ``tm`` list)."""
        q, c, n, rows = (float(v) for v in wire)
        self.queue_s, self.compute_s = max(q, 0.0), max(c, 0.0)
        self.batch_requests, self.batch_rows = int(n), int(rows)


class JsonlSpanExporter:
    """An OpenTelemetry ``SpanExporter`` that appends one JSON object per span to a file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        lines = [json.dumps(span_record(s), separators=(",", ":")) for s in spans]
        try:
            with self._lock, self.path.open("a", encoding="utf-8") as fh:
                fh.write("\n".join(lines) + "\n")
        except OSError as exc:  # a full disk must never fail a request
            logger.warning("could not write %d span(s) to %s: %s", len(lines), self.path, exc)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def span_record(span: Any) -> dict[str, Any]:
    """A finished SDK span as a flat, stable JSON object (what the JSONL file holds)."""
    ctx = span.get_span_context()
    parent = span.parent
    return {
        "name": span.name,
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_id": f"{parent.span_id:016x}" if parent is not None else None,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
    }


class Tracer:
    """Starts request traces; owns the SDK provider and its exporter (one per process)."""

    def __init__(self, settings: TracingSettings, *, process: str = "") -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.settings = settings
        ratio = TraceIdRatioBased(settings.sample_ratio)
        sampler = ParentBased(ratio) if settings.parent_based else ratio
        attrs = {"service.name": settings.service_name}
        if process:
            attrs["service.instance.id"] = process
        # A provider of our own, never the global one: Ray installs its own tracing hooks.
        self._provider = TracerProvider(sampler=sampler, resource=Resource.create(attrs))
        if settings.otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter: Any = OTLPSpanExporter(endpoint=settings.otlp_endpoint, timeout=5)
        else:
            exporter = JsonlSpanExporter(settings.jsonl_path)
        # Export happens on the processor's thread, in batches: never on a request's path.
        self._provider.add_span_processor(
            BatchSpanProcessor(exporter, schedule_delay_millis=500, max_queue_size=8192)
        )
        self._tracer = self._provider.get_tracer("rayfront")
        self._propagator = TraceContextTextMapPropagator()

    def begin(self, carrier: Mapping[str, str] | None, protocol: str) -> RequestTrace | None:
        """A trace for this request when it is sampled, else None (then nothing is recorded)."""
        from opentelemetry.trace import SpanKind

        # The propagator reads only the trace-context fields of the carrier.
        parent = self._propagator.extract(carrier) if carrier and TRACEPARENT in carrier else None
        start = time.time_ns()
        root = self._tracer.start_span(
            "infer",
            context=parent,
            kind=SpanKind.SERVER,
            start_time=start,
            attributes={"rpc.system": protocol},
        )
        if not root.is_recording():
            return None
        return RequestTrace(self._tracer, root, start)

    def flush(self, timeout_s: float = 5.0) -> bool:
        return bool(self._provider.force_flush(int(timeout_s * 1000)))

    def shutdown(self) -> None:
        self._provider.shutdown()


class RequestTrace:
    """One sampled request's stage stamps; :meth:`finish` turns them into spans."""

    __slots__ = ("_done", "_root", "_tracer", "marks", "timing")

    def __init__(self, tracer: Any, root: Any, start_ns: int) -> None:
        self._tracer = tracer
        self._root = root
        self._done = False
        self.marks: dict[str, int] = {"start": start_ns}
        self.timing = StageTiming()

    @property
    def trace_id(self) -> str:
        return f"{self._root.get_span_context().trace_id:032x}"

    def mark(self, stage: str) -> None:
        """Stamp the end of ``stage`` (decoded, validated, returned, encoded)."""
        self.marks[stage] = time.time_ns()

    def annotate(self, **attributes: str | int | float) -> None:
        self._root.set_attributes(attributes)

    def finish(self, error: BaseException | None = None) -> None:
        """Write the stage spans and end the root; once (later calls do nothing)."""
        if self._done:
            return
        self._done = True
        from opentelemetry import trace
        from opentelemetry.trace import Status, StatusCode

        end = self.marks.get("encoded") or time.time_ns()
        if error is not None:
            self._root.set_status(Status(StatusCode.ERROR, type(error).__name__))
            self._root.set_attribute("error.type", type(error).__name__)
        t = self.timing
        self._root.set_attributes({"batch.requests": t.batch_requests, "batch.rows": t.batch_rows})
        ctx = trace.set_span_in_context(self._root)
        for name, start, stop, attrs in stage_spans(self.marks, t, end):
            span = self._tracer.start_span(name, context=ctx, start_time=start, attributes=attrs)
            span.end(end_time=stop)
        self._root.end(end_time=end)


def stage_spans(
    marks: Mapping[str, int], timing: StageTiming, end_ns: int
) -> list[tuple[str, int, int, dict[str, Any]]]:
    """(name, start_ns, end_ns, attributes) of each stage that ran, contiguous (pure).

    A request that failed early has fewer stages; the round trip to the replica is split
    into its measured queue and compute times and two transfer halves around them.
    """
    out: list[tuple[str, int, int, dict[str, Any]]] = []
    cursor = marks["start"]
    for stage, name in (("decoded", "decode"), ("validated", "validate")):
        if stage not in marks:
            break
        out.append((name, cursor, marks[stage], {}))
        cursor = marks[stage]
    if "returned" in marks and "validated" in marks:
        back = marks["returned"]
        trip = back - cursor
        queue = min(int(timing.queue_s * 1e9), trip)
        compute = min(int(timing.compute_s * 1e9), trip - queue)
        transfer_in = (trip - queue - compute) // 2
        q0 = cursor + transfer_in
        c0 = q0 + queue
        c1 = c0 + compute
        batch = {"batch.requests": timing.batch_requests, "batch.rows": timing.batch_rows}
        out += [
            ("transfer", cursor, q0, {"direction": "in"}),
            ("queue", q0, c0, {}),
            ("compute", c0, c1, batch),
            ("transfer", c1, back, {"direction": "out"}),
        ]
        cursor = back
    if "encoded" in marks and cursor <= marks["encoded"]:
        out.append(("encode", cursor, marks["encoded"], {}))
    elif cursor < end_ns and out:
        # Failed between stages: the rest of the request, so the children still add up.
        out.append(("error", cursor, end_ns, {}))
    return out


async def traced(
    tracer: Tracer | None,
    carrier: Mapping[str, str] | None,
    protocol: str,
    handle: Callable[[RequestTrace | None], Awaitable[_T]],
) -> _T:
    """Run one protocol handler under a request trace when it is sampled (the one wrapper
    the HTTP and gRPC adapters share): the trace ends with the handler, failed or not."""
    trace = tracer.begin(carrier, protocol) if tracer is not None else None
    if trace is None:
        return await handle(None)
    try:
        result = await handle(trace)
    except BaseException as exc:
        trace.finish(exc)
        raise
    trace.finish()
    return result
