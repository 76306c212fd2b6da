"""The results schema: what a sweep writes (results.json, results.csv) and reads back.

One :class:`SweepResult` per run. JSON is the complete record (configuration, machine,
every point, every failure reason); CSV is the same points flattened one row per
measurement for spreadsheets and pandas. Both parse back with :func:`load_json` and
:func:`read_csv`, which is what ``rayfront bench report`` and the tests use.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from rayfront.benchmarks.run.sweep_config import SweepConfig
from rayfront.errors import InvalidArgumentError

RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
SUMMARY_MD = "summary.md"
PLOTS_DIR = "plots"

Status = Literal["ok", "failed", "skipped"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LatencySummary(_Model):
    """Latency percentiles in milliseconds over the measured requests."""

    p50_ms: float = Field(description="Median latency.")
    p90_ms: float = Field(description="90th percentile.")
    p99_ms: float = Field(description="99th percentile.")
    mean_ms: float = Field(description="Mean latency.")
    max_ms: float = Field(description="Slowest request.")

    @classmethod
    def of(cls, latencies_s: Sequence[float]) -> LatencySummary | None:
        """Summary of latencies given in seconds; None when there are none."""
        if len(latencies_s) == 0:
            return None
        arr = np.asarray(latencies_s, dtype=np.float64) * 1000.0
        p50, p90, p99 = np.percentile(arr, [50, 90, 99])
        return cls(
            p50_ms=float(p50),
            p90_ms=float(p90),
            p99_ms=float(p99),
            mean_ms=float(arr.mean()),
            max_ms=float(arr.max()),
        )


class Point(_Model):
    """One closed-loop measurement of a served target at one concurrency."""

    concurrency: int = Field(ge=1, description="Concurrent closed-loop clients.")
    request_batch: int = Field(ge=1, description="Rows per request.")
    duration_s: float = Field(ge=0, description="Measured window.")
    requests: int = Field(ge=0, description="Successful requests completed in the window.")
    errors: int = Field(ge=0, description="Failed requests (any status but 200, timeouts, resets).")
    req_per_s: float = Field(ge=0, description="Successful requests per second.")
    rows_per_s: float = Field(ge=0, description="Successful rows (inferences) per second.")
    latency: LatencySummary | None = Field(default=None, description="Latency of successes.")
    error_samples: list[str] = Field(default_factory=list, description="A few error messages.")

    @property
    def p50_ms(self) -> float:
        return self.latency.p50_ms if self.latency else math.nan

    @property
    def p99_ms(self) -> float:
        return self.latency.p99_ms if self.latency else math.nan

    @property
    def error_rate(self) -> float:
        total = self.requests + self.errors
        return self.errors / total if total else 0.0


class RawPoint(_Model):
    """ONNX Runtime ``session.run`` at one batch size, in-process."""

    batch_size: int = Field(ge=1, description="Rows per session.run call.")
    calls: int = Field(ge=0, description="Timed calls.")
    duration_s: float = Field(ge=0, description="Timed seconds.")
    rows_per_s: float = Field(ge=0, description="Rows per second.")
    latency: LatencySummary | None = Field(default=None, description="Per-call latency.")


class TargetResult(_Model):
    """Every point of one target (and batching setting) on one model."""

    target: str = Field(description="Target name, e.g. rayfront-http.")
    batching: str = Field(default="", description="Batching setting label; '' when not batched.")
    status: Status = Field(description="ok, failed (see reason) or skipped.")
    reason: str = Field(default="", description="Why the target failed or was skipped.")
    startup_s: float | None = Field(default=None, description="Seconds until ready.")
    points: list[Point] = Field(default_factory=list, description="One per concurrency level.")

    @property
    def label(self) -> str:
        return f"{self.target} [{self.batching}]" if self.batching else self.target

    def at(self, concurrency: int) -> Point | None:
        return next((p for p in self.points if p.concurrency == concurrency), None)


class ModelResult(_Model):
    """All targets measured on one model."""

    model: str = Field(description="Benchmark model name.")
    description: str = Field(description="What the model is.")
    export: str = Field(default="", description="How the ONNX file was produced.")
    p99_bound_ms: float = Field(gt=0, description="p99 bound used for the knee.")
    raw_status: Status = Field(default="skipped", description="Status of the raw sweep.")
    raw_reason: str = Field(default="", description="Why the raw sweep failed.")
    raw: list[RawPoint] = Field(default_factory=list, description="Raw session.run sweep.")
    targets: list[TargetResult] = Field(default_factory=list, description="Served targets.")

    @property
    def raw_limit(self) -> RawPoint | None:
        """The raw point with the most rows/s (the limit every server is compared with)."""
        return max(self.raw, key=lambda r: r.rows_per_s, default=None)

    def target(self, name: str, batching: str = "") -> TargetResult | None:
        return next((t for t in self.targets if t.target == name and t.batching == batching), None)


class RunMeta(_Model):
    """Where and how the run happened; ratios only compare within one run."""

    started_at: str = Field(description="ISO time the sweep started.")
    finished_at: str = Field(default="", description="ISO time the sweep finished.")
    host: str = Field(description="Host name.")
    cpu_count: int = Field(description="os.cpu_count() on the host.")
    platform: str = Field(description="OS and architecture.")
    python: str = Field(description="Python version.")
    versions: dict[str, str] = Field(default_factory=dict, description="Key package versions.")
    client: str = Field(description="Load generator used for the served targets.")
    config: SweepConfig = Field(description="The sweep configuration.")


class SweepResult(_Model):
    """A whole run."""

    meta: RunMeta = Field(description="Run metadata.")
    models: list[ModelResult] = Field(default_factory=list, description="Per-model results.")

    def model(self, name: str) -> ModelResult | None:
        return next((m for m in self.models if m.model == name), None)


# --- JSON ---------------------------------------------------------------------------------


def write_json(result: SweepResult, out_dir: Path) -> Path:
    """Write ``results.json`` atomically (a crash mid-write leaves the old file)."""
    path = out_dir / RESULTS_JSON
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(result.model_dump_json(indent=2), encoding="utf-8")
    tmp.replace(path)
    return path


def load_json(path: Path) -> SweepResult:
    """Parse ``results.json`` (or a directory holding one) back into a :class:`SweepResult`."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_JSON
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidArgumentError(f"no benchmark results at {path}") from None
    return SweepResult.model_validate_json(text)


# --- CSV ----------------------------------------------------------------------------------

CSV_COLUMNS: tuple[str, ...] = (
    "model",
    "target",
    "batching",
    "status",
    "concurrency",
    "request_batch",
    "batch_size",
    "requests",
    "errors",
    "duration_s",
    "req_per_s",
    "rows_per_s",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "mean_ms",
    "max_ms",
)


class CsvRow(_Model):
    """One row of results.csv. Raw rows have ``batch_size`` and no concurrency."""

    model: str = Field(description="Model name.")
    target: str = Field(description="Target name ('raw' for the session.run sweep).")
    batching: str = Field(description="Batching setting label or ''.")
    status: Status = Field(description="Target status.")
    concurrency: int | None = Field(description="Client concurrency; None for raw rows.")
    request_batch: int | None = Field(description="Rows per request; None for raw rows.")
    batch_size: int | None = Field(description="Rows per session.run; raw rows only.")
    requests: int = Field(description="Successful requests or calls.")
    errors: int = Field(description="Failed requests.")
    duration_s: float = Field(description="Measured seconds.")
    req_per_s: float | None = Field(description="Requests per second; None for raw rows.")
    rows_per_s: float = Field(description="Rows per second.")
    p50_ms: float | None = Field(description="Median latency.")
    p90_ms: float | None = Field(description="p90 latency.")
    p99_ms: float | None = Field(description="p99 latency.")
    mean_ms: float | None = Field(description="Mean latency.")
    max_ms: float | None = Field(description="Max latency.")


# Empty CSV cells mean "not applicable" only in these columns; elsewhere '' is a value.
_NULLABLE = frozenset(
    {
        "concurrency",
        "request_batch",
        "batch_size",
        "req_per_s",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "mean_ms",
        "max_ms",
    }
)


def _latency_cells(lat: LatencySummary | None) -> dict[str, Any]:
    keys = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "max_ms")
    if lat is None:
        return dict.fromkeys(keys)
    return {k: round(getattr(lat, k), 4) for k in keys}


def csv_rows(result: SweepResult) -> Iterable[CsvRow]:
    """Flatten a run into CSV rows (raw rows first per model, then targets in order)."""
    for m in result.models:
        for r in m.raw:
            yield CsvRow(
                model=m.model,
                target="raw",
                batching="",
                status=m.raw_status,
                concurrency=None,
                request_batch=None,
                batch_size=r.batch_size,
                requests=r.calls,
                errors=0,
                duration_s=round(r.duration_s, 4),
                req_per_s=None,
                rows_per_s=round(r.rows_per_s, 3),
                **_latency_cells(r.latency),
            )
        for t in m.targets:
            for p in t.points:
                yield CsvRow(
                    model=m.model,
                    target=t.target,
                    batching=t.batching,
                    status=t.status,
                    concurrency=p.concurrency,
                    request_batch=p.request_batch,
                    batch_size=None,
                    requests=p.requests,
                    errors=p.errors,
                    duration_s=round(p.duration_s, 4),
                    req_per_s=round(p.req_per_s, 3),
                    rows_per_s=round(p.rows_per_s, 3),
                    **_latency_cells(p.latency),
                )


def write_csv(result: SweepResult, out_dir: Path) -> Path:
    """Write ``results.csv`` (header + one row per measurement)."""
    path = out_dir / RESULTS_CSV
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in csv_rows(result):
            writer.writerow({k: ("" if v is None else v) for k, v in row.model_dump().items()})
    return path


def read_csv(path: Path) -> list[CsvRow]:
    """Parse ``results.csv`` back; empty cells become None. Raises on a wrong header."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_CSV
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != CSV_COLUMNS:
            raise InvalidArgumentError(
                f"{path}: unexpected CSV header {reader.fieldnames}; expected {list(CSV_COLUMNS)}"
            )
        return [
            CsvRow.model_validate(
                {k: (None if v == "" and k in _NULLABLE else v) for k, v in row.items()}
            )
            for row in reader
        ]
