"""`rayfront repo validate|list`: output and exit codes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from repo_helpers import make_provenance, make_spec
from typer.testing import CliRunner

from rayfront.repository.repo_cli import app
from rayfront.repository.writer import write_version

runner = CliRunner()
WIDE = {"COLUMNS": "400"}  # rich wraps tables at 80 columns when not on a terminal


@pytest.fixture
def repo(repo_root: Path, onnx_file: Callable[..., Path]) -> Path:
    for _ in range(2):
        write_version(repo_root, make_spec(), {"model.onnx": onnx_file()}, make_provenance())
    return repo_root


def test_repo_validate_exits_0_and_prints_table_when_repository_is_valid(repo: Path) -> None:
    result = runner.invoke(app, ["validate", "--repository", str(repo)], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "1 models ok" in result.stdout
    assert "│ m " in result.stdout


def test_repo_validate_exits_1_and_names_problem_when_model_file_is_missing(repo: Path) -> None:
    (repo / "m" / "2" / "model.onnx").unlink()
    result = runner.invoke(app, ["validate", "-r", str(repo), "--json"])
    assert result.exit_code == 1
    payload = json.loads(result.stdout)
    assert payload["ok"] is False
    (model,) = payload["models"]
    assert model["name"] == "m"
    assert model["versions"] == [1, 2]
    messages = [(p["version"], p["message"]) for p in model["problems"]]
    assert (2, "model.onnx: listed in rayfront.json but missing") in messages


def test_repo_validate_table_shows_fail_when_config_is_broken(repo: Path) -> None:
    (repo / "m" / "config.pbtxt").write_text("max_batch_size: [[[")
    result = runner.invoke(app, ["validate", "-r", str(repo)], env=WIDE)
    assert result.exit_code == 1
    assert "FAIL" in result.stdout
    assert "1 of 1 models have problems: m" in result.stdout


@pytest.mark.parametrize("command", ["validate", "list"])
def test_repo_commands_exit_2_with_one_line_when_repository_is_missing(
    tmp_path: Path, command: str
) -> None:
    result = runner.invoke(app, [command, "--repository", str(tmp_path / "absent")])
    assert result.exit_code == 2
    assert result.stderr == f"error: model repository {tmp_path / 'absent'} does not exist\n"
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", ["validate", "list"])
def test_repo_commands_exit_2_with_one_line_when_repository_is_a_file(
    tmp_path: Path, command: str
) -> None:
    f = tmp_path / "repo"
    f.write_text("")
    result = runner.invoke(app, [command, "--repository", str(f)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: model repository {f} is a file")
    assert result.stderr.count("\n") == 1


def test_repo_validate_defaults_to_model_repository_in_cwd_when_no_option(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(repo.parent)
    result = runner.invoke(app, ["validate", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["repository"] == "model_repository"


def test_repo_list_json_reports_versions_tensors_and_parity_when_sidecars_exist(repo: Path) -> None:
    result = runner.invoke(app, ["list", "-r", str(repo), "--json"])
    assert result.exit_code == 0, result.output
    (model,) = json.loads(result.stdout)["models"]
    assert model["platform"] == "onnxruntime_onnx"
    assert model["max_batch_size"] == 8
    assert model["inputs_summary"] == "x:FP32[3]"
    assert [(v["version"], v["served"]) for v in model["versions"]] == [(1, False), (2, True)]
    assert model["versions"][1]["parity_max_abs_err"] == pytest.approx(2e-7)
    assert model["error"] is None


def test_repo_list_table_shows_model_and_config_error_when_one_config_is_broken(
    repo: Path, onnx_file: Callable[..., Path]
) -> None:
    write_version(repo, make_spec(name="other"), {"model.onnx": onnx_file()}, make_provenance())
    (repo / "other" / "config.pbtxt").write_text("garbage {")
    result = runner.invoke(app, ["list", "-r", str(repo)], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "config error" in result.stdout
    assert "onnxruntime_onnx" in result.stdout
    assert "1, 2*" in result.stdout
