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


def _print_config(tmp_path: Path, *args: str, env: dict[str, str] | None = None):
    (tmp_path / "repo").mkdir(exist_ok=True)
    return CliRunner().invoke(
        app, ["serve", "-r", str(tmp_path / "repo"), "--print-config", *args], env=env
    )


def test_print_config_never_writes_the_admin_token_into_the_yaml(tmp_path: Path):
    result = _print_config(tmp_path, "--admin-token", "s3cret-token")
    assert result.exit_code == 0, result.output
    assert "s3cret-token" not in result.stdout
    args = yaml.safe_load(result.stdout)["applications"][-1]["args"]
    assert args["admin_token"] is None
    assert args["admin_token_env"] == "RAYFRONT_ADMIN_TOKEN"
    assert "not written into the YAML" in result.stderr


def test_admin_token_file_is_referenced_not_copied(tmp_path: Path):
    token = tmp_path / "token"
    token.write_text("from-a-secret\n")
    result = _print_config(tmp_path, "--admin-token-file", str(token))
    assert result.exit_code == 0, result.output
    assert "from-a-secret" not in result.stdout
    args = yaml.safe_load(result.stdout)["applications"][-1]["args"]
    assert args["admin_token_file"] == str(token)


def test_empty_admin_token_refuses_to_start_rather_than_opening_admin(tmp_path: Path):
    result = _print_config(tmp_path, "--admin-token", "")
    assert result.exit_code != 0
    assert "admin_token" in result.output
    empty = tmp_path / "empty"
    empty.write_text("  \n")
    result = _print_config(tmp_path, "--admin-token-file", str(empty))
    assert result.exit_code == 1
    assert f"admin_token_file {empty} is empty" in result.output


def test_admin_token_env_resolves_in_the_process_and_unset_is_an_error(monkeypatch):
    import pytest

    from rayfront.errors import RayfrontError
    from rayfront.settings import ServerSettings

    settings = ServerSettings(repository=Path("."), admin_token_env="RF_TEST_TOKEN")
    monkeypatch.delenv("RF_TEST_TOKEN", raising=False)
    with pytest.raises(RayfrontError, match="RF_TEST_TOKEN, which is unset or empty"):
        settings.resolve_admin_token()
    monkeypatch.setenv("RF_TEST_TOKEN", "tok")
    assert settings.resolve_admin_token() == "tok"
    with pytest.raises(ValueError, match="one way, not admin_token and admin_token_env"):
        ServerSettings(repository=Path("."), admin_token="a", admin_token_env="B")


def _strings_only(mapping: dict) -> bool:
    return all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items())


def test_rayservice_manifest_has_the_fields_kuberay_reads_and_probes_that_exist(tmp_path: Path):
    """Checked against the RayService CRD (ray.io/v1) fields it uses, and against rayfront's
    own router: the probes must point at routes the gateway serves."""
    import json

    from rayfront.canary.api import canary_routes
    from rayfront.protocol.http_app import build_http_app

    result = _print_config(
        tmp_path, "--format", "rayservice", "--admin-token", "t0k", "--gateway-replicas", "2"
    )
    assert result.exit_code == 0, result.output
    assert "t0k" not in result.stdout
    doc = yaml.safe_load(result.stdout)
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayService")
    assert doc["metadata"]["name"]
    spec = doc["spec"]
    serve_cfg = yaml.safe_load(spec["serveConfigV2"])  # a string holding the Serve config
    assert serve_cfg["proxy_location"] == "Disabled"
    gateway = serve_cfg["applications"][-1]
    assert gateway["import_path"] == "rayfront.deploy.app:build_gateway"
    assert gateway["args"]["host"] == "0.0.0.0"
    assert gateway["args"]["gateway_resources"] == {"rayfront_ingress": 1.0}
    assert gateway["args"]["admin_token_env"] == "RAYFRONT_ADMIN_TOKEN"

    cluster = spec["rayClusterConfig"]
    head = cluster["headGroupSpec"]
    assert _strings_only(head["rayStartParams"])  # KubeRay takes strings only
    offered = json.loads(json.loads(head["rayStartParams"]["resources"]))
    assert offered["rayfront_ingress"] >= 2  # both gateway replicas fit on the head
    (container,) = head["template"]["spec"]["containers"]
    assert container["name"] and container["image"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == 8000 and ports["grpc"] == 8001
    secret = container["env"][0]
    assert secret["name"] == "RAYFRONT_ADMIN_TOKEN"
    assert secret["valueFrom"]["secretKeyRef"]["key"] == "token"

    router = build_http_app(None, extra_routes=canary_routes(None)).router  # type: ignore[arg-type]
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["port"] == ports["http"]
        found = router.match(get["path"])
        assert found is not None and "GET" in found[0], (probe, get["path"])

    for group in cluster["workerGroupSpecs"]:
        assert group["groupName"] and _strings_only(group["rayStartParams"])
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        (worker,) = group["template"]["spec"]["containers"]
        mounts = {m["mountPath"] for m in worker["volumeMounts"]}
        assert gateway["args"]["repository"] in mounts  # same path on every pod


def test_print_config_format_is_checked(tmp_path: Path):
    result = _print_config(tmp_path, "--format", "helm")
    assert result.exit_code == 1
    assert "expected 'serve' or 'rayservice'" in result.output


def test_print_config_carries_tracing_payload_log_and_pulled_repository_when_flagged(
    tmp_path: Path,
):
    from rayfront.repository.remote import cache_dir_for

    bucket = tmp_path / "bucket"
    (bucket / "m" / "1").mkdir(parents=True)
    (bucket / "m" / "config.pbtxt").write_text(
        'name: "m"\nplatform: "onnxruntime_onnx"\n'
        'input { name: "x" data_type: TYPE_FP32 dims: [ 2 ] }\n'
        'output { name: "y" data_type: TYPE_FP32 dims: [ 2 ] }\n'
    )
    (bucket / "m" / "1" / "model.onnx").write_bytes(b"x")
    url = f"file://{bucket}"
    result = CliRunner().invoke(
        app,
        [
            "serve", "-r", url, "--repository-cache", str(tmp_path / "cache"), "--print-config",
            "--trace-file", str(tmp_path / "traces.jsonl"), "--trace-sample-ratio", "0.5",
            "--payload-log", str(tmp_path / "payloads"), "--payload-sample-ratio", "0.25",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    args = yaml.safe_load(result.output.split("\n", 1)[1])["applications"][-1]["args"]
    assert args["repository"] == str(cache_dir_for(url, tmp_path / "cache"))
    assert args["tracing"]["jsonl_path"] == str(tmp_path / "traces.jsonl")
    assert args["tracing"]["sample_ratio"] == 0.5
    assert args["payload_log"]["directory"] == str(tmp_path / "payloads")
    assert args["payload_log"]["sample_ratio"] == 0.25


def test_serve_refuses_relative_trace_file_in_yaml_when_validated(tmp_path: Path):
    path = _yaml(tmp_path)
    doc = yaml.safe_load(path.read_text())
    doc["applications"][0]["args"]["tracing"] = {"jsonl_path": "traces.jsonl"}
    path.write_text(yaml.safe_dump(doc))
    result = CliRunner().invoke(app, ["serve", "--config", str(path), "--print-config"])
    assert result.exit_code == 1
    assert (
        "tracing: Value error, tracing jsonl_path 'traces.jsonl' must be absolute" in result.output
    )
