"""Report files: JSON, CSV, PNG plots and a markdown summary with ratios at the knee."""

from __future__ import annotations

from pathlib import Path

from bench_helpers import mlp_result, sweep_result

from rayfront.benchmarks.analysis.report import write_report
from rayfront.benchmarks.analysis.results import load_json, read_csv

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_write_report_writes_every_file_when_given_results(tmp_path: Path) -> None:
    result = sweep_result(tmp_path)
    files = write_report(result, tmp_path)
    assert load_json(files.json) == result
    assert len(read_csv(files.csv)) == 15
    assert sorted(p.name for p in files.plots) == ["mlp_latency.png", "mlp_throughput.png"]
    for p in files.plots:
        assert p.read_bytes()[:8] == PNG_MAGIC


def test_summary_states_ratios_to_raw_and_bare_when_knees_exist(tmp_path: Path) -> None:
    files = write_report(sweep_result(tmp_path), tmp_path)
    text = files.summary.read_text()
    # rayfront-grpc [32:1000] knee: c=64, 9000 rows/s; raw limit 1,050,000; bare knee 7000.
    row = next(line for line in text.splitlines() if line.startswith("| rayfront-grpc | 32:1000 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "64"
    assert cells[7] == "0.0086x"
    assert cells[8] == "1.29x"
    assert "Raw limit: **1,050,000.0 rows/s**" in text
    assert "## Goals" in text and "not measured" in text  # no cnn in this run
    assert "### Recommendation for mlp" in text
    assert "max_batch_size 32, max_queue_delay_microseconds 1000, replicas 1" in text
    assert "Load generator: test client" in text


def test_summary_lists_failed_target_with_reason_when_it_did_not_run(tmp_path: Path) -> None:
    mlp = mlp_result()
    mlp.targets[1] = mlp.targets[1].model_copy(
        update={
            "status": "failed",
            "points": [],
            "reason": "failed to start: serve exited with code 1: boom (log x)\ntraceback",
        }
    )
    text = write_report(sweep_result(tmp_path, [mlp]), tmp_path).summary.read_text()
    assert "- **serve** failed: failed to start: serve exited with code 1: boom (log x)" in text
    assert "traceback" not in text


def test_summary_marks_no_knee_when_every_point_exceeds_bound(tmp_path: Path) -> None:
    mlp = mlp_result().model_copy(update={"p99_bound_ms": 1.5})
    text = write_report(sweep_result(tmp_path, [mlp]), tmp_path).summary.read_text()
    assert "| serve | — | none under bound |" in text
