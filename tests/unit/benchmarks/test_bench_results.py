"""results.json / results.csv: written, parsed back, and rejected when malformed."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from rayfront.benchmarks.analysis.results import (
    CSV_COLUMNS,
    LatencySummary,
    SweepResult,
    load_json,
    read_csv,
    write_csv,
    write_json,
)
from rayfront.errors import InvalidArgumentError


def test_json_round_trips_when_written_and_loaded(
    tmp_path: Path, sample_result: SweepResult
) -> None:
    write_json(sample_result, tmp_path)
    back = load_json(tmp_path)
    assert back == sample_result
    mlp = back.model("mlp")
    assert mlp is not None and mlp.raw_limit is not None
    assert mlp.raw_limit.batch_size == 64
    assert mlp.target("rayfront-grpc", "32:1000").at(64).rows_per_s == 9000  # type: ignore[union-attr]


def test_load_json_raises_when_file_is_missing(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="no benchmark results at"):
        load_json(tmp_path / "nope")


def test_csv_has_raw_and_served_rows_when_written(
    tmp_path: Path, sample_result: SweepResult
) -> None:
    write_csv(sample_result, tmp_path)
    rows = read_csv(tmp_path)
    raw = [r for r in rows if r.target == "raw"]
    served = [r for r in rows if r.target != "raw"]
    assert [r.batch_size for r in raw] == [1, 32, 64]
    assert all(r.concurrency is None and r.req_per_s is None for r in raw)
    assert len(served) == 12
    http_on = next(
        r
        for r in served
        if r.target == "rayfront-http" and r.batching == "32:1000" and r.concurrency == 64
    )
    assert http_on.rows_per_s == 8000 and http_on.p99_ms == 9 and http_on.batch_size is None
    bare = next(r for r in served if r.target == "bare")
    assert bare.batching == ""


def test_read_csv_raises_when_header_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    path.write_text("model,target\nmlp,raw\n")
    with pytest.raises(InvalidArgumentError, match="unexpected CSV header"):
        read_csv(path)


def test_csv_header_matches_columns_when_written(
    tmp_path: Path, sample_result: SweepResult
) -> None:
    path = write_csv(sample_result, tmp_path)
    assert path.read_text().splitlines()[0] == ",".join(CSV_COLUMNS)


def test_latency_summary_is_none_when_no_latencies() -> None:
    assert LatencySummary.of([]) is None
    s = LatencySummary.of([0.001] * 99 + [0.1])
    assert s is not None
    assert s.p50_ms == pytest.approx(1.0)
    assert s.max_ms == pytest.approx(100.0)
    assert 1.0 < s.p99_ms <= 100.0


def test_point_reports_nan_latency_when_no_successes(sample_result: SweepResult) -> None:
    p = (
        sample_result.models[0]
        .targets[0]
        .points[0]
        .model_copy(update={"latency": None, "requests": 0, "errors": 3})
    )
    assert math.isnan(p.p99_ms)
    assert p.error_rate == 1.0
