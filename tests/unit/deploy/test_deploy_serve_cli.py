"""`rayfront serve --config` reads settings from the Serve YAML; explicit flags override."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from rayfront.cli import app


def _yaml(tmp_path: Path) -> Path:
    (tmp_path / "repo").mkdir()
    doc = {
        "applications": [
            {
                "import_path": "rayfront.deploy.app:build_gateway",
                "args": {"repository": str(tmp_path / "repo"), "http_port": 9999},
            }
        ]
    }
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_serve_config_yaml_settings_apply_when_flags_not_given(tmp_path: Path):
    result = CliRunner().invoke(
        app, ["serve", "--config", str(_yaml(tmp_path)), "--print-config", "--grpc-port", "7777"]
    )
    assert result.exit_code == 0, result.output
    args = yaml.safe_load(result.output)["applications"][-1]["args"]
    assert args["repository"] == str(tmp_path / "repo")
    assert args["http_port"] == 9999  # from the YAML
    assert args["grpc_port"] == 7777  # the explicit flag wins


def test_serve_refuses_missing_repository_when_path_absent(tmp_path: Path):
    result = CliRunner().invoke(
        app, ["serve", "--repository", str(tmp_path / "nope"), "--print-config"]
    )
    assert result.exit_code == 1
    assert "does not exist" in result.output
