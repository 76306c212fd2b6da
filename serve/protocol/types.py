"""Transport-neutral KServe v2 request/response objects.

HTTP and gRPC codecs decode into these and encode from these; the data plane only ever
sees numpy tensors, never JSON or protobuf.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rayfront.tensors import TensorDict
from rayfront.tracing import RequestTrace

# Request parameters rayfront understands (others are passed through untouched).
PARAM_TIMEOUT = "timeout"  # microseconds, as Triton's queue policy
PARAM_PRIORITY = "priority"
PARAM_ROUTE_KEY = "x-rayfront-route-key"  # canary sticky routing key (also an HTTP header)
PARAM_BINARY_OUTPUT = "binary_data_output"  # Triton HTTP binary extension


@dataclass(slots=True)
class RequestedOutput:
    """One entry of the request's ``outputs`` list."""

    name: str
    binary: bool | None = None  # None: use the request default
    class_count: int = 0  # Triton classification extension; 0 = raw tensor
    #: System shared memory: (region name, offset, byte size) to write the output into.
    shm: tuple[str, int, int] | None = None


@dataclass(slots=True)
class InferRequest:
    """A decoded inference request. ``model_version`` "" lets the router choose."""

    model_name: str
    inputs: TensorDict
    model_version: str = ""
    id: str = ""
    outputs: list[RequestedOutput] | None = None  # None: every output
    parameters: dict[str, Any] = field(default_factory=dict)
    binary_output_default: bool = False
    route_key: str | None = None  # sticky canary routing key (header or parameter)
    timeout_us: int | None = None
    priority: int = 0
    trace: RequestTrace | None = None  # set when this request is sampled for tracing


@dataclass(slots=True)
class InferResponse:
    """The result for one request, outputs already filtered to those requested."""

    model_name: str
    model_version: str
    outputs: TensorDict
    id: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    # Per-output binary flag for HTTP encoding; filled from the request.
    binary_outputs: dict[str, bool] = field(default_factory=dict)
