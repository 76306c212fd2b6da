"""Scale to zero and back: a version with ``min_replicas: 0`` wakes on its first request.

The version starts with no replica. A request then waits (bounded by ``replica_wait_s``)
while Serve starts one, and gets the right answer; idle again, the version drops back to
zero replicas, and the next request wakes it once more. Requests that arrive together
while it wakes all get their answers.
"""

from __future__ import annotations

import concurrent.futures
import shutil
import time

import numpy as np
import pytest
import tritonclient.http as httpclient
import yaml
from serving_harness import Server, descendants, start_server, stop_server

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(400)]

REPLICA = "ServeReplica:rayfront--digits--v1:ModelVersion"


def _replicas(server: Server) -> int:
    """This server's digits replicas (the suite's shared server has one of its own)."""
    count = 0
    for pid in descendants(server.proc.pid):
        try:
            with open(f"/proc/{pid}/cmdline") as f:
                count += REPLICA in f.read()
        except OSError:
            continue
    return count


def _wait_replicas(server: Server, n: int, timeout_s: float) -> float:
    start = time.monotonic()
    while _replicas(server) != n:
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"expected {n} digits replicas, have {_replicas(server)}")
        time.sleep(0.5)
    return time.monotonic() - start


def _infer(url: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    client = httpclient.InferenceServerClient(url, network_timeout=120)
    x = np.random.default_rng(seed).random((1, 1, 8, 8), dtype=np.float32)
    inp = httpclient.InferInput("pixels", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return x, client.infer("digits", [inp]).as_numpy("logits")


def test_version_scaled_to_zero_wakes_on_request_and_sleeps_when_idle(
    model_repository, ort_sessions, tmp_path
):
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(model_repository / "digits", repo / "digits")
    autoscaling = {
        "min_replicas": 0,
        "max_replicas": 1,
        "initial_replicas": 0,
        "upscale_delay_s": 0.0,
        "downscale_delay_s": 4.0,
    }
    app = {
        "name": "rayfront",
        "import_path": "rayfront.deploy.app:build_gateway",
        "args": {"repository": str(repo), "models": {"digits": {"autoscaling": autoscaling}}},
    }
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({"applications": [app]}))
    server = start_server(repo, tmp_path / "serve.log", "--config", str(config))
    session = ort_sessions["digits"]
    try:
        client = httpclient.InferenceServerClient(server.http_url)
        assert _replicas(server) == 0
        assert client.is_model_ready("digits")  # ready to take requests: it wakes on one

        for round_ in range(2):
            started = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(lambda s: _infer(server.http_url, s), range(8)))
            woke_s = time.monotonic() - started
            for x, got in answers:
                want = session.run(["logits"], {"pixels": x})[0]
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
            assert _replicas(server) == 1
            slept_s = _wait_replicas(server, 0, timeout_s=90)
            print(
                f"\nround {round_}: woke and answered 8 in {woke_s:.1f}s, back to 0 in {slept_s:.1f}s"
            )
    finally:
        stop_server(server)
