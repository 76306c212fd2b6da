"""What one sweep measures: models, targets, concurrency levels, batching settings, durations.

Everything the CLI accepts is parsed here into one frozen :class:`SweepConfig`, so the
runner, the report and the tests agree on names and defaults.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rayfront.errors import InvalidArgumentError

#: Target names the runner knows, in the order they are measured.
TARGETS: tuple[str, ...] = (
    "raw",
    "batcher",
    "bare",
    "serve",
    "rayfront-http",
    "rayfront-grpc",
)
#: What each target is, for the report.
TARGET_DESCRIPTIONS: dict[str, str] = {
    "raw": "ONNX Runtime session.run in-process at each batch size, no server (the limit)",
    "batcher": "rayfront's engine (instances, batch slots, dynamic batcher) in-process, no Ray, no transport",
    "bare": "single-process uvicorn+httptools KServe v2 binary endpoint, one session.run per request",
    "serve": "plain Ray Serve configured as a competent user would: @serve.batch, max_ongoing_requests above the batch, throughput-optimized mode",
    "rayfront-http": "rayfront serve, KServe v2 HTTP with binary tensors",
    "rayfront-grpc": "rayfront serve, KServe v2 gRPC (Triton GRPCInferenceService)",
}
#: Targets whose batching setting is swept (the others have no batcher).
BATCHED_TARGETS: frozenset[str] = frozenset({"batcher", "rayfront-http", "rayfront-grpc"})
#: Targets that need Ray; the rest run where Ray is not installed.
RAY_TARGETS: frozenset[str] = frozenset({"serve", "rayfront-http", "rayfront-grpc"})

DEFAULT_CONCURRENCY: tuple[int, ...] = (1, 4, 16, 64, 128)
QUICK_CONCURRENCY: tuple[int, ...] = (1, 4)


class BatchingSetting(BaseModel):
    """One dynamic-batching configuration: ``off`` or ``MAX_BATCH:DELAY_US[:REPLICAS]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int | None = Field(
        default=None, ge=1, description="dynamic_batching max batch size; None = batching off."
    )
    max_queue_delay_us: int = Field(default=0, ge=0, description="max_queue_delay_microseconds.")
    replicas: int = Field(default=1, ge=1, description="Model replicas (instance_group count).")

    @property
    def enabled(self) -> bool:
        return self.max_batch_size is not None

    @property
    def label(self) -> str:
        """The spec string this setting parses from (round-trips through :meth:`parse`)."""
        base = (
            "off"
            if self.max_batch_size is None
            else f"{self.max_batch_size}:{self.max_queue_delay_us}"
        )
        return base if self.replicas == 1 else f"{base}:x{self.replicas}"

    @classmethod
    def parse(cls, text: str) -> BatchingSetting:
        """``off``, ``off:x2``, ``32:1000`` or ``32:1000:x2`` (replicas)."""
        raw = text.strip().lower()
        m = re.fullmatch(r"(?:(off)|(\d+):(\d+))(?::x(\d+))?", raw)
        if not m:
            raise InvalidArgumentError(
                f"batching setting {text!r}: expected 'off' or 'MAX_BATCH:DELAY_US' with an "
                "optional ':xREPLICAS', e.g. 'off', '32:1000', '32:1000:x2'"
            )
        off, mb, delay, replicas = m.groups()
        return cls(
            max_batch_size=None if off else int(mb),
            max_queue_delay_us=0 if off else int(delay),
            replicas=int(replicas or 1),
        )


DEFAULT_BATCHING: tuple[str, ...] = ("off", "16:500", "64:2000")
QUICK_BATCHING: tuple[str, ...] = ("off", "32:1000")


def parse_duration(text: str) -> float:
    """``10s``, ``500ms``, ``2m`` or a bare number of seconds -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*", text)
    if not m:
        raise InvalidArgumentError(f"duration {text!r}: expected e.g. '10s', '500ms', '2m' or '3'")
    value, unit = float(m.group(1)), m.group(2) or "s"
    seconds = value / 1000 if unit == "ms" else value * 60 if unit == "m" else value
    if seconds <= 0:
        raise InvalidArgumentError(f"duration {text!r} must be positive")
    return seconds


def parse_list(text: str, what: str) -> list[str]:
    """Comma-separated names, stripped, empty entries dropped; at least one required."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise InvalidArgumentError(f"{what}: expected a comma-separated list, got {text!r}")
    return items


def parse_ints(text: str, what: str) -> list[int]:
    """Comma-separated positive integers, e.g. ``1,4,16``."""
    out: list[int] = []
    for item in parse_list(text, what):
        if not item.isdigit() or int(item) <= 0:
            raise InvalidArgumentError(f"{what}: {item!r} is not a positive integer (in {text!r})")
        out.append(int(item))
    return out


class SweepConfig(BaseModel):
    """Everything the sweep runner needs; recorded verbatim in results.json."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: tuple[str, ...] = Field(description="Benchmark model names (see models.MODELS).")
    targets: tuple[str, ...] = Field(description="Targets to measure, a subset of TARGETS.")
    concurrency: tuple[int, ...] = Field(description="Closed-loop client concurrency levels.")
    batching: tuple[BatchingSetting, ...] = Field(
        description="Dynamic-batching settings swept on the batched targets."
    )
    duration_s: float = Field(gt=0, description="Measured seconds per point.")
    warmup_s: float = Field(ge=0, description="Unmeasured seconds before each point.")
    request_batch: int = Field(default=1, ge=1, description="Rows per request (batch dim).")
    p99_ms: float | None = Field(
        default=None, gt=0, description="p99 bound for the knee; None = each model's default."
    )
    target_rps: float | None = Field(
        default=None, gt=0, description="Load to size replicas for in the recommendation."
    )
    device: Literal["cpu", "cuda"] = Field(default="cpu", description="Where models run.")
    tensorrt: bool = Field(default=False, description="Prefer ORT's TensorRT EP on cuda.")
    raw_batches: tuple[int, ...] | None = Field(
        default=None, description="Batch sizes for the raw sweep; None = each model's default."
    )
    out: Path = Field(description="Results directory.")
    repository: Path | None = Field(
        default=None, description="Existing bench repository to reuse instead of exporting."
    )
    startup_timeout_s: float = Field(default=240.0, gt=0, description="Per server start.")
    request_timeout_s: float = Field(default=30.0, gt=0, description="Per request.")
    grpc_channels: int = Field(default=4, ge=1, description="gRPC client channels (connections).")
    quick: bool = Field(default=False, description="Smoke-test sizing (CI).")

    @field_validator("targets")
    @classmethod
    def _known_targets(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [t for t in v if t not in TARGETS]
        if unknown:
            raise ValueError(f"unknown targets {unknown}; expected a subset of {list(TARGETS)}")
        # Measure in the canonical order whatever order was given.
        return tuple(t for t in TARGETS if t in v)

    @field_validator("concurrency")
    @classmethod
    def _sorted_concurrency(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(c <= 0 for c in v):
            raise ValueError(f"concurrency levels must be positive, got {list(v)}")
        return tuple(sorted(set(v)))

    @model_validator(mode="after")
    def _batching_present(self) -> SweepConfig:
        if any(t in BATCHED_TARGETS for t in self.targets) and not self.batching:
            raise ValueError("batched targets need at least one batching setting (e.g. 'off')")
        labels = [b.label for b in self.batching]
        if len(set(labels)) != len(labels):
            raise ValueError(f"duplicate batching settings {labels}")
        return self

    @property
    def needs_ray(self) -> bool:
        return any(t in RAY_TARGETS for t in self.targets)
