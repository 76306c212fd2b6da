"""Lifecycle: graceful drain on SIGTERM, and the Serve config YAML run by stock ``serve run``."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tritonclient.http as httpclient
import yaml
from serving_harness import Server, descendants, free_port, start_server, stop_server, wait_ready

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _slow_minilm_request(url: str) -> np.ndarray:
    from rayfront.export.demos.minilm import tokenize

    tokens = tokenize(["a deliberately long sentence to keep the encoder busy " * 8] * 16)
    client = httpclient.InferenceServerClient(url, network_timeout=120)
    inputs = []
    for name, arr in tokens.items():
        inp = httpclient.InferInput(name, list(arr.shape), "INT64")
        inp.set_data_from_numpy(arr.astype(np.int64))
        inputs.append(inp)
    return client.infer("minilm", inputs).as_numpy("embedding")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline") as f:
            return f.read().replace("\0", " ")[:80]
    except OSError:
        return ""


def _wait_gone(pids: set[int], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.5)
    left = [_cmdline(p) for p in sorted(pids) if _alive(p)]
    assert not left, f"still running {timeout_s:.0f} s after SIGKILL of the server: {left}"


@pytest.mark.parametrize("target", ["process", "group"])
def test_sigterm_drains_in_flight_requests_when_server_stops(model_repository, tmp_path, target):
    """``kill -TERM <pid>`` (Kubernetes, Docker) and ``kill -TERM -<pgid>`` (systemd,
    a terminal's Ctrl-C) both drain: Ray runs in its own process groups, so a group
    signal does not kill the replicas under the requests in flight."""
    server = start_server(model_repository, tmp_path / "serve.log")
    try:
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            futures = [pool.submit(_slow_minilm_request, server.http_url) for _ in range(12)]
            time.sleep(0.5)  # requests are queued/executing now
            in_flight = [f for f in futures if not f.done()]
            assert in_flight, "every request finished before the signal; nothing to drain"
            if target == "group":
                os.killpg(server.proc.pid, signal.SIGTERM)
            else:
                server.proc.send_signal(signal.SIGTERM)
            results = [f.result(timeout=120) for f in futures]
        assert len(results) == 12
        for emb in results:
            assert emb.shape == (16, 384)
            np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-4)
        assert server.proc.wait(timeout=90) == 0
        assert "draining" in server.log.read_text()
        # New connections are refused once stopped.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.http_port), timeout=5)
    finally:
        stop_server(server)


def test_sigkill_of_the_server_takes_its_ray_processes_down(model_repository, tmp_path):
    """No drain is possible after SIGKILL, but nothing may be left behind holding the GPU,
    memory or ports: Ray's processes share the server's fate."""
    server = start_server(model_repository, tmp_path / "serve.log")
    try:
        ray_procs = descendants(server.proc.pid)
        assert len(ray_procs) >= 3, "expected GCS, raylet and workers under the server"
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(timeout=10)
        # The replicas (model memory, GPU) go with the raylet within seconds. Ray's two
        # agents first try to tell the dead GCS (a 60 s RPC timeout inside Ray), then exit;
        # waiting that out here would cost CI a minute, so the test checks that they were
        # orphaned (their raylet is gone, which is what makes them exit).
        agents = {p for p in ray_procs if "Agent" in _cmdline(p)}
        _wait_gone(ray_procs - agents, 30.0)
        for pid in agents:
            if _alive(pid):
                with open(f"/proc/{pid}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                assert ppid not in ray_procs, f"{_cmdline(pid)} still has a live Ray parent"
    finally:
        stop_server(server)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.proc.pid, signal.SIGKILL)


def test_print_config_deploys_with_stock_serve_run_when_given_the_yaml(model_repository, tmp_path):
    http_port, grpc_port = free_port(), free_port()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "rayfront",
            "serve",
            "--print-config",
            "--repository",
            str(model_repository),
            "--http-port",
            str(http_port),
            "--grpc-port",
            str(grpc_port),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    config = yaml.safe_load(out)
    assert config["proxy_location"] == "Disabled"
    names = {app["name"] for app in config["applications"]}
    assert {"rayfront", "rayfront--digits--v1", "rayfront--minilm--v1"} <= names
    path = tmp_path / "serve.yaml"
    path.write_text(out)
    serve_bin = os.path.join(os.path.dirname(sys.executable), "serve")
    log = tmp_path / "serve-run.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [serve_bin, "run", str(path)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(proc, http_port, grpc_port, log, model_repository)
    try:
        wait_ready(server)
        x = np.zeros((1, 1, 8, 8), np.float32)
        inp = httpclient.InferInput("pixels", [1, 1, 8, 8], "FP32")
        inp.set_data_from_numpy(x)
        result = httpclient.InferenceServerClient(server.http_url).infer("digits", [inp])
        assert result.as_numpy("logits").shape == (1, 10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C, as a user stops `serve run`
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_sigterm_while_models_load_stops_the_server(model_repository, tmp_path):
    """A start that waits on a model (its replica needs 64 CPUs this machine lacks) must not
    make the server deaf: SIGTERM during it stops everything within the drain deadline."""
    import shutil

    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(model_repository / "digits", repo / "digits")
    app = {
        "name": "rayfront",
        "import_path": "rayfront.deploy.app:build_gateway",
        "args": {
            "repository": str(repo),
            "deploy_timeout_s": 600,
            "models": {"digits": {"num_cpus": 64}},
        },
    }
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({"applications": [app]}))
    log = tmp_path / "serve.log"
    cmd = [sys.executable, "-m", "rayfront", "serve", "-r", str(repo), "--config", str(config),
           "--http-port", str(free_port()), "--grpc-port", str(free_port())]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while b"Adding 1 replica to Deployment(name='ModelVersion'" not in log.read_bytes():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        time.sleep(3.0)  # the load is now waiting for a replica that cannot be placed
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=90)
        print(f"\nstopped {time.monotonic() - started:.1f}s after SIGTERM during start")
        assert descendants(proc.pid) == set()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
