"""Lifecycle: graceful drain on SIGTERM, and the Serve config YAML run by stock ``serve run``."""

from __future__ import annotations

import concurrent.futures
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
from serving_harness import Server, free_port, start_server, stop_server, wait_ready

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


def test_sigterm_drains_in_flight_requests_when_server_stops(model_repository, tmp_path):
    server = start_server(model_repository, tmp_path / "serve.log")
    try:
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            futures = [pool.submit(_slow_minilm_request, server.http_url) for _ in range(12)]
            time.sleep(0.5)  # requests are queued/executing now
            in_flight = [f for f in futures if not f.done()]
            assert in_flight, "every request finished before the signal; nothing to drain"
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
