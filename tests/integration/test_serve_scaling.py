"""Scaling on one node through real Ray Serve: ingress processes and model replicas.

* Several gateway (ingress) processes share the HTTP port (SO_REUSEPORT), and requests
  that arrive on different ones still share batches, because batching lives in the
  model replica where they converge.
* A version under sustained load scales 1 -> N replicas on its queue and back to 1 when
  the load drops, with no failed request; the reaction times are printed (``-s``).

Everything is read from the server's own merged ``/metrics`` (``rayfront_process`` labels
each sample with the process that counted it), as an operator would.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
import yaml
from serving_harness import Server, start_server, stop_server

from rayfront.repository.pbtxt import read_config, render_config
from rayfront.spec import DynamicBatching

pytestmark = [pytest.mark.ray, pytest.mark.slow]

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)\{(?P<labels>[^}]*)\} (?P<value>\S+)$")


def _metrics(server: Server) -> list[tuple[str, dict[str, str], float]]:
    with urllib.request.urlopen(f"http://{server.http_url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out = []
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m["labels"]))
            out.append((m["name"], labels, float(m["value"])))
    return out


def _by_process(server: Server, name: str, model: str) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for metric, labels, value in _metrics(server):
        if metric == name and labels.get("model") == model:
            totals[labels.get("rayfront_process", "")] += value
    return dict(totals)


def _replicas(server: Server, model: str) -> int | None:
    counts = [
        value
        for metric, labels, value in _metrics(server)
        if metric == "rayfront_model_replicas" and labels.get("model") == model
    ]
    return int(max(counts)) if counts else None


def _server(
    model_repository: Path,
    tmp_path: Path,
    *,
    max_batch: int,
    delay_us: int,
    preferred: tuple[int, ...],
    parameters: dict[str, str] | None = None,
    **settings: object,
) -> Server:
    """A server of its own on a copy of the digits model with this batching."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(model_repository / "digits", repo / "digits")
    spec = read_config(repo / "digits")
    spec = spec.model_copy(
        update={
            "max_batch_size": max_batch,
            "dynamic_batching": DynamicBatching(
                preferred_batch_size=preferred, max_queue_delay_microseconds=delay_us
            ),
            "parameters": {**spec.parameters, **(parameters or {})},
        }
    )
    (repo / "digits" / "config.pbtxt").write_text(render_config(spec))
    config = tmp_path / "serve.yaml"
    app = {
        "name": "rayfront",
        "import_path": "rayfront.deploy.app:build_gateway",
        "args": {"repository": str(repo), **settings},
    }
    config.write_text(yaml.safe_dump({"applications": [app]}))
    return start_server(repo, tmp_path / "serve.log", "--config", str(config))


def _infer(url: str, rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    # A client per call: a new connection, which SO_REUSEPORT hands to any ingress.
    client = httpclient.InferenceServerClient(url, network_timeout=60)
    try:
        x = np.random.default_rng(seed).random((rows, 1, 8, 8), dtype=np.float32)
        inp = httpclient.InferInput("pixels", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        return x, client.infer("digits", [inp]).as_numpy("logits")
    finally:
        client.close()


def test_batches_fill_across_ingress_processes_when_they_share_the_port(
    model_repository, ort_sessions, tmp_path
):
    # One replica, a long batching window (2 s), a preferred size of 8 and Triton's waiting
    # rule (a short batch waits out the window): eight single-row requests fill one batch
    # however the kernel spreads their connections. The adaptive rule would let a request
    # that finds the replica idle leave alone, which on a loaded CI host splits the eight
    # into 4-8 executions and says nothing about where batching lives.
    server = _server(
        model_repository,
        tmp_path,
        max_batch=8,
        delay_us=2_000_000,
        preferred=(8,),
        parameters={"rayfront.batch_wait": "full"},
        gateway_replicas=2,
    )
    try:
        ingresses: dict[str, float] = {}
        results: list[tuple[np.ndarray, np.ndarray]] = []
        rounds = 0
        while len(ingresses) < 2 and rounds < 6:
            rounds += 1
            batch: list[tuple[np.ndarray, np.ndarray]] = []

            def one(seed: int, into: list = batch) -> None:
                into.append(_infer(server.http_url, 1, seed))

            threads = [
                threading.Thread(target=one, args=(seed,))
                for seed in range(rounds * 8, rounds * 8 + 8)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert len(batch) == 8, server.log_tail()
            results += batch
            time.sleep(2.5)  # a telemetry publish
            success = _by_process(server, "nv_inference_request_success", "digits")
            ingresses = {p: n for p, n in success.items() if p.startswith("ingress-") and n}
        assert len(ingresses) == 2, f"one ingress took every connection: {ingresses}"

        # Every answer is its own request's (ONNX Runtime on the same rows).
        session = ort_sessions["digits"]
        for x, logits in results:
            np.testing.assert_allclose(logits, session.run(["logits"], {"pixels": x})[0], atol=1e-4)

        requests = sum(ingresses.values())
        executions = sum(_by_process(server, "nv_inference_exec_count", "digits").values())
        rows = sum(_by_process(server, "nv_inference_count", "digits").values())
        assert requests == len(results) and rows == len(results)
        # Batched where the two ingress processes' requests meet: a round of eight
        # arrives well within the 2 s window, so one batch per round.
        assert executions <= rounds + 1, (executions, rounds)
    finally:
        stop_server(server)


def test_version_scales_up_under_queue_and_back_down_when_load_stops(model_repository, tmp_path):
    # No batching beyond one row per execution and four rows in flight, so a sustained
    # closed loop of 24 clients is a queue the policy must answer with more replicas.
    server = _server(
        model_repository,
        tmp_path,
        max_batch=1,
        delay_us=0,
        preferred=(1,),
        replica_num_cpus=0.1,
        models={
            "digits": {
                "autoscaling": {
                    "min_replicas": 1,
                    "max_replicas": 3,
                    "target_ongoing_requests": 1.0,
                    "upscale_delay_s": 1.0,
                    "downscale_delay_s": 6.0,
                }
            }
        },
    )
    failures: list[str] = []
    done = 0
    lock = threading.Lock()
    stop_heavy = threading.Event()
    stop_all = threading.Event()

    def client_loop(stop: threading.Event, seed: int) -> None:
        nonlocal done
        client = httpclient.InferenceServerClient(server.http_url, network_timeout=60)
        rng = np.random.default_rng(seed)
        while not stop.is_set():
            x = rng.random((1, 1, 8, 8), dtype=np.float32)
            inp = httpclient.InferInput("pixels", [1, 1, 8, 8], "FP32")
            inp.set_data_from_numpy(x)
            try:
                out = client.infer("digits", [inp]).as_numpy("logits")
                assert out.shape == (1, 10)
                with lock:
                    done += 1
            except Exception as exc:  # every failure is a test failure, reported below
                with lock:
                    failures.append(f"{type(exc).__name__}: {exc}")
        client.close()

    try:
        assert _replicas(server, "digits") in (None, 1)
        t0 = time.monotonic()
        heavy = [
            threading.Thread(target=client_loop, args=(stop_heavy, i), daemon=True)
            for i in range(24)
        ]
        # One light client keeps going through the scale-down: removed replicas must
        # drain, not drop its requests.
        light = threading.Thread(target=client_loop, args=(stop_all, 99), daemon=True)
        for t in (*heavy, light):
            t.start()

        up_s = None
        while time.monotonic() - t0 < 120:
            if (_replicas(server, "digits") or 0) >= 3:
                up_s = time.monotonic() - t0
                break
            time.sleep(0.5)
        assert up_s is not None, f"never reached 3 replicas:\n{server.log_tail()}"

        stop_heavy.set()
        for t in heavy:
            t.join(60)
        t1 = time.monotonic()
        down_s = None
        while time.monotonic() - t1 < 120:
            if _replicas(server, "digits") == 1:
                down_s = time.monotonic() - t1
                break
            time.sleep(0.5)
        assert down_s is not None, f"never scaled back to 1 replica:\n{server.log_tail()}"
        time.sleep(2)  # requests keep succeeding on the remaining replica
        stop_all.set()
        light.join(60)

        print(
            f"\nautoscaling 1->3 after {up_s:.1f}s of load, 3->1 {down_s:.1f}s after it "
            f"stopped (downscale_delay_s 6); {done} requests, {len(failures)} failed"
        )
        assert not failures, failures[:5]
        assert done > 100
    finally:
        stop_heavy.set()
        stop_all.set()
        stop_server(server)
