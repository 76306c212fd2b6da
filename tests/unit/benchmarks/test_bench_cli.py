"""``rayfront bench`` commands that need no servers: report, recommend, and argument errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench_helpers import sweep_result
from typer.testing import CliRunner

from rayfront.benchmarks.analysis.results import load_json, write_json
from rayfront.benchmarks.run.bench_cli import app

runner = CliRunner()


def test_report_regenerates_files_when_given_results_dir(tmp_path: Path) -> None:
    write_json(sweep_result(tmp_path), tmp_path)
    result = runner.invoke(app, ["report", str(tmp_path), "--p99-ms", "10"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "summary.md").is_file()
    assert (tmp_path / "plots" / "mlp_throughput.png").is_file()
    assert load_json(tmp_path).models[0].p99_bound_ms == 10
    assert "p99 ≤ 10 ms" in (tmp_path / "summary.md").read_text()


def test_recommend_prints_settings_and_how_to_apply_when_feasible(tmp_path: Path) -> None:
    write_json(sweep_result(tmp_path), tmp_path)
    result = runner.invoke(
        app, ["recommend", str(tmp_path / "results.json"), "--target-rps", "20000"]
    )
    assert result.exit_code == 0, result.output
    assert "max_batch_size 32, max_queue_delay_microseconds 1000, replicas 3" in result.output
    assert "max_queue_delay_microseconds: 1000" in result.output
    assert "import_path: rayfront.deploy.app:build_gateway" in result.output


def test_recommend_fails_when_model_not_in_results(tmp_path: Path) -> None:
    write_json(sweep_result(tmp_path), tmp_path)
    result = runner.invoke(app, ["recommend", str(tmp_path), "--model", "cnn"])
    assert result.exit_code == 2
    assert "model 'cnn' is not in" in result.output


def test_report_fails_when_results_missing(tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", str(tmp_path / "none")])
    assert result.exit_code == 2
    assert "no benchmark results at" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batching", "on"], "batching setting 'on'"),
        (["--models", "bert"], "unknown benchmark model 'bert'"),
        (["--targets", "raw,triton"], "unknown targets ['triton']"),
        (["--duration", "soon"], "duration 'soon'"),
        (["--device", "tpu"], "--device 'tpu'"),
        (["--concurrency", "0"], "--concurrency: '0' is not a positive integer"),
    ],
)
def test_run_fails_before_measuring_when_arguments_are_bad(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = runner.invoke(app, ["run", "--out", str(tmp_path / "out"), *args])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "out").exists()
