"""Canary rollouts end to end: real server, real exported versions, real clients.

v1 and v2 are the trained digits CNN (v2 a re-export: a good candidate); v3 is the same
network with its classes rotated (a real defect). All requests are real digit images.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from serving_harness import ADMIN_TOKEN, export_into, start_server, stop_server

pytestmark = [pytest.mark.ray, pytest.mark.slow]

BROKEN = str(Path(__file__).with_name("canary_models.py")) + ":broken_digits"


def _images() -> np.ndarray:
    from rayfront.export.demos.digits import load_data

    return load_data().x_test.astype(np.float32)


IMAGES = None


def _infer(url: str, i: int, *, version: str = "", key: str | None = None) -> str:
    global IMAGES
    if IMAGES is None:
        IMAGES = _images()
    client = httpclient.InferenceServerClient(url)
    inp = httpclient.InferInput("pixels", [1, 1, 8, 8], "FP32")
    inp.set_data_from_numpy(IMAGES[i % len(IMAGES)][None])
    headers = {"x-rayfront-route-key": key} if key else None
    result = client.infer("digits", [inp], model_version=version, headers=headers)
    return result.get_response()["model_version"]


def _api(
    server, method: str, path: str, body: dict | None = None, token: str | None = ADMIN_TOKEN
) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(
            method,
            "/v2/rayfront/canary/digits" + path,
            body=json.dumps(body).encode() if body is not None else None,
            headers=headers,
        )
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def _burst(url: str, n: int, workers: int = 8, **kw: object) -> list[str]:
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda i: _infer(url, i, **kw), range(n)))


@pytest.fixture(scope="module")
def canary_server(tmp_path_factory):
    from rayfront.export.demos import DIGITS_REF, digits

    root = tmp_path_factory.mktemp("canary") / "model_repository"
    export_into(
        root,
        DIGITS_REF,
        "digits",
        digits.INPUTS,
        digits.OUTPUTS,
        digits.MAX_BATCH_SIZE,
        version_policy="all",
    )
    logs = tmp_path_factory.mktemp("canary-logs")
    server = start_server(
        root,
        logs / "serve.log",
        "--admin-token",
        ADMIN_TOKEN,
        # Every request recorded: rehearsals replay them.
        "--payload-log",
        str(logs / "payloads"),
        "--payload-sample-ratio",
        "1",
    )
    try:
        # New versions exported while serving, then loaded through the repository API.
        export_into(
            root,
            DIGITS_REF,
            "digits",
            digits.INPUTS,
            digits.OUTPUTS,
            digits.MAX_BATCH_SIZE,
            version_policy="all",
        )
        export_into(
            root,
            BROKEN,
            "digits",
            digits.INPUTS,
            digits.OUTPUTS,
            digits.MAX_BATCH_SIZE,
            version_policy="all",
            atol=1e-3,
            rtol=1e-3,
        )
        httpclient.InferenceServerClient(server.http_url).load_model(
            "digits", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        yield server
    finally:
        stop_server(server)


def test_new_versions_get_no_traffic_when_loaded_without_rollout(canary_server):
    assert set(_burst(canary_server.http_url, 60)) == {"1"}


def test_pinned_versions_are_exact_when_requested_by_url_or_grpc_field(canary_server):
    assert set(_burst(canary_server.http_url, 20, version="3")) == {"3"}
    client = grpcclient.InferenceServerClient(canary_server.grpc_url)
    inp = grpcclient.InferInput("pixels", [1, 1, 8, 8], "FP32")
    inp.set_data_from_numpy(_images()[:1])
    assert client.infer("digits", [inp], model_version="2").get_response().model_version == "2"


def test_split_matches_weights_when_80_20(canary_server):
    status, doc = _api(canary_server, "POST", "/weights", {"weights": {"1": 80, "2": 20, "3": 0}})
    assert status == 200, doc
    counts = Counter(_burst(canary_server.http_url, 2000, workers=16))
    share = counts["2"] / 2000
    # Binomial sd for p=0.2, n=2000 is 0.0089: 4 sd.
    assert abs(share - 0.2) < 0.036, counts
    assert counts["3"] == 0


def test_sticky_key_always_reaches_same_version_when_weights_unchanged(canary_server):
    seen: dict[str, set[str]] = {}
    for k in range(24):
        key = f"user-{k}"
        seen[key] = set(_burst(canary_server.http_url, 6, workers=3, key=key))
    assert all(len(v) == 1 for v in seen.values()), seen
    assert {next(iter(v)) for v in seen.values()} == {"1", "2"}  # keys spread over both


def test_weight_changes_fail_no_request_when_under_load(canary_server):
    stop = threading.Event()
    errors: list[str] = []
    done = Counter()

    def load() -> None:
        i = 0
        while not stop.is_set():
            try:
                done[_infer(canary_server.http_url, i)] += 1
            except Exception as exc:
                errors.append(repr(exc))
            i += 1

    threads = [threading.Thread(target=load) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        for weights in (
            {"1": 50, "2": 50},
            {"1": 0, "2": 100},
            {"1": 100, "2": 0},
            {"1": 90, "2": 10},
        ):
            time.sleep(0.7)
            status, doc = _api(canary_server, "POST", "/weights", {"weights": {**weights, "3": 0}})
            assert status == 200, doc
        time.sleep(0.7)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert done["1"] > 0 and done["2"] > 0


def test_bad_admin_input_changes_nothing_when_rejected(canary_server):
    before = _api(canary_server, "GET", "")[1]["policy"]
    cases = [
        ("/weights", {"weights": {"1": 70, "2": 20}}, 400, "100"),
        ("/weights", {"weights": {"1": 90, "9": 10}}, 404, "9"),
        ("/start", {"canary_version": "9", "steps": [50, 100], "interval_s": 1}, 404, "9"),
    ]
    for path, body, code, fragment in cases:
        status, doc = _api(canary_server, "POST", path, body)
        assert status == code and fragment in doc["error"], (path, doc)
    status, doc = _api(canary_server, "POST", "/weights", {"weights": {"1": 100}}, token="wrong")
    assert status == 403
    assert _api(canary_server, "GET", "")[1]["policy"] == before


def _wait_status(server, predicate, timeout_s: float, traffic: bool = True) -> dict:
    deadline = time.monotonic() + timeout_s
    i = 0
    while time.monotonic() < deadline:
        if traffic:
            _burst(server.http_url, 40, workers=8)
            i += 40
        doc = _api(server, "GET", "")[1]
        if predicate(doc):
            return doc
        time.sleep(0.2)
    raise AssertionError(f"condition not reached in {timeout_s}s: {json.dumps(doc)[:2000]}")


def test_shadow_compares_without_serving_candidate_when_mirrored(canary_server):
    _api(canary_server, "POST", "/weights", {"weights": {"1": 100, "2": 0, "3": 0}})
    status, doc = _api(canary_server, "POST", "/shadow", {"percent": 100, "target": "3"})
    assert status == 200, doc
    served = _burst(canary_server.http_url, 80)
    assert set(served) == {"1"}  # clients only ever get stable's answer
    doc = _wait_status(
        canary_server,
        lambda d: (d.get("shadow", {}).get("3") or {}).get("comparisons", 0) >= 50,
        60,
    )
    assert doc["shadow"]["3"]["agreement"] < 0.2  # rotated classes disagree
    _api(canary_server, "POST", "/shadow", {"percent": 100, "target": "2"})
    doc = _wait_status(
        canary_server,
        lambda d: (d.get("shadow", {}).get("2") or {}).get("comparisons", 0) >= 50,
        60,
    )
    assert doc["shadow"]["2"]["agreement"] == 1.0
    _api(canary_server, "POST", "/shadow", {"percent": 0})


def _fast_plan(canary_version: str) -> dict:
    """A rollout against v1 with 2 s steps; p99 is loose because CI latency is noisy."""
    return {
        "canary_version": canary_version,
        "stable_version": "1",
        "steps": [10, 50, 100],
        "interval_s": 2,
        "max_error_rate": 0.01,
        "max_p99_ratio": 50,
        "min_agreement": 0.95,
        "min_requests": 10,
        "shadow_percent": 50,
    }


def test_rehearsal_stops_bad_candidate_before_live_traffic_and_passes_good_one(canary_server):
    _api(canary_server, "POST", "/weights", {"weights": {"1": 100, "2": 0, "3": 0}})
    assert set(_burst(canary_server.http_url, 60)) == {"1"}  # fresh recorded traffic of v1
    payloads = str(canary_server.log.parent / "payloads")
    time.sleep(1.0)  # the payload log's writer thread catches up

    bad = _cli(
        canary_server, "start", "digits", "--version", "3", "--steps", "10,100",
        "--interval", "2s", "--rehearse", "--payload-log", payloads,
        "--rehearse-requests", "40", "--rehearse-speed", "20",
    )  # fmt: skip
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "rehearsal of v3 failed; no rollout started" in bad.stderr
    assert "agreement with the recorded answers" in bad.stderr
    doc = _api(canary_server, "GET", "")[1]
    assert doc["policy"]["weights"].get("3", 0) == 0  # never received live traffic
    assert doc["rollout"] is None  # the start was refused: nothing to resume or promote

    good = _cli(
        canary_server, "rehearse", "digits", "--version", "2", "--payload-log", payloads,
        "--max-requests", "40", "--speed", "20", "--json",
    )  # fmt: skip
    assert good.returncode == 0, good.stdout + good.stderr
    result = json.loads(good.stdout)
    assert result["verdict"] == "pass" and result["agreement"] == 1.0
    assert result["requests"] == 40 and result["stable_version"] == "1"
    kept = _api(canary_server, "GET", "")[1]["rehearsals"]
    assert [(r["canary_version"], r["verdict"]) for r in kept[-2:]] == [
        ("3", "fail"),
        ("2", "pass"),
    ]
    assert (
        "rehearsal of v2 on 40 recorded requests" in _cli(canary_server, "status", "digits").stdout
    )


def test_progressive_rollout_rolls_back_bad_candidate_when_agreement_low(canary_server):
    _api(canary_server, "POST", "/weights", {"weights": {"1": 100, "2": 0, "3": 0}})
    plan = _fast_plan("3")
    status, doc = _api(canary_server, "POST", "/start", plan)
    assert status == 200, doc
    status, doc = _api(canary_server, "POST", "/start", plan)
    assert status == 409  # a second rollout on the same model
    doc = _wait_status(
        canary_server, lambda d: (d.get("rollout") or {}).get("status") == "rolled_back", 90
    )
    assert doc["policy"]["weights"].get("3", 0) == 0
    assert "agreement" in doc["rollout"]["reason"]
    assert set(_burst(canary_server.http_url, 40)) == {"1"}


@pytest.fixture
def hook_server():
    """A local webhook receiver: /confirm answers 500, everything else 200; bodies kept."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    calls: list[tuple[str, dict]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            calls.append(
                (self.path, json.loads(self.rfile.read(int(self.headers["content-length"]))))
            )
            self.send_response(500 if self.path == "/confirm" else 200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", calls
    finally:
        server.shutdown()


def test_progressive_rollout_pauses_when_confirm_webhook_fails(canary_server, hook_server):
    base, calls = hook_server
    plan = _fast_plan("2")
    plan["webhooks"] = [
        {"name": "approve", "type": "confirm-rollout", "url": f"{base}/confirm", "retries": 0},
        {"name": "tell", "type": "post-rollout", "url": f"{base}/notify", "retries": 0},
    ]
    status, doc = _api(canary_server, "POST", "/start", plan)
    assert status == 200, doc
    doc = _wait_status(
        canary_server, lambda d: (d.get("rollout") or {}).get("status") == "paused", 90
    )
    assert doc["rollout"]["reason"].startswith("confirm-rollout webhook 'approve' failed: HTTP 500")
    assert doc["rollout"]["step_index"] == 0 and doc["policy"]["weights"]["2"] == 10
    sent = next(body for path, body in calls if path == "/confirm")
    assert sent["model"] == "digits" and sent["canary_version"] == "2"
    assert _api(canary_server, "POST", "/abort", {})[0] == 200
    deadline = time.monotonic() + 10
    while not any(path == "/notify" for path, _ in calls) and time.monotonic() < deadline:
        time.sleep(0.1)
    told = next(body for path, body in calls if path == "/notify")
    assert told["phase"] == "aborted"
    assert set(_burst(canary_server.http_url, 40)) == {"1"}


def test_progressive_rollout_promotes_good_candidate_when_metrics_pass(canary_server):
    plan = _fast_plan("2")
    status, doc = _api(canary_server, "POST", "/start", plan)
    assert status == 200, doc
    doc = _wait_status(
        canary_server, lambda d: (d.get("rollout") or {}).get("status") == "promoted", 120
    )
    assert doc["policy"]["weights"]["2"] == 100
    actions = [h["action"] for h in doc["rollout"]["history"]]
    assert actions.count("advance") >= 2 and actions[-1] == "promote"
    # The old stable is scheduled to give its replicas back after the grace period.
    assert any(r["version"] == "1" for r in doc["retirements"]), doc["retirements"]
    assert set(_burst(canary_server.http_url, 40)) == {"2"}


def _two_digits_versions(parent: Path) -> Path:
    """A repository of its own holding digits v1 and v2 (the same trained network)."""
    from rayfront.export.demos import DIGITS_REF, digits

    root = parent / "model_repository"
    for _ in range(2):
        export_into(
            root,
            DIGITS_REF,
            "digits",
            digits.INPUTS,
            digits.OUTPUTS,
            digits.MAX_BATCH_SIZE,
            version_policy="all",
        )
    return root


def test_rollout_resumes_at_same_step_when_server_restarts(tmp_path_factory):
    root = _two_digits_versions(tmp_path_factory.mktemp("canary-restart"))
    logs = tmp_path_factory.mktemp("canary-restart-logs")
    server = start_server(root, logs / "a.log", "--admin-token", ADMIN_TOKEN)
    try:
        _api(server, "POST", "/weights", {"weights": {"1": 100, "2": 0}})
        plan = {
            "canary_version": "2",
            "stable_version": "1",
            "steps": [20, 60, 100],
            "interval_s": 3600,
            "min_requests": 1,
        }
        assert _api(server, "POST", "/start", plan)[0] == 200
        before = _api(server, "GET", "")[1]
    finally:
        stop_server(server)
    assert (root / "digits" / "rollout.json").exists()
    server = start_server(root, logs / "b.log", "--admin-token", ADMIN_TOKEN)
    try:
        after = _api(server, "GET", "")[1]
        assert after["rollout"]["step_index"] == before["rollout"]["step_index"] == 0
        assert after["policy"]["weights"] == before["policy"]["weights"] == {"1": 80, "2": 20}
        assert after["rollout"]["status"] == "running"
    finally:
        stop_server(server)


def _cli(server, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "RAYFRONT_URL": f"http://{server.http_url}",
        "RAYFRONT_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    return subprocess.run(
        [sys.executable, "-m", "rayfront", "canary", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_canary_cli_changes_and_shows_state_when_run_against_server(canary_server):
    # v1 may already be retired (promotion above); split between the versions still live.
    done = _cli(canary_server, "set-weights", "digits", "2=70", "3=30")
    assert done.returncode == 0, done.stderr
    shown = _cli(canary_server, "status", "digits", "--json")
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert (doc["policy"]["weights"]["2"], doc["policy"]["weights"]["3"]) == (70, 30)
    table = _cli(canary_server, "status", "digits")
    assert table.returncode == 0 and "digits" in table.stdout
    bad = _cli(canary_server, "set-weights", "digits", "2=50", "3=40")
    assert bad.returncode != 0 and "100" in bad.stderr
    metrics = (
        urllib.request.urlopen(f"http://{canary_server.http_url}/metrics", timeout=10)
        .read()
        .decode()
    )
    # Every sample carries the process that published it (see rayfront.telemetry).
    assert re.search(
        r'^rayfront_canary_weight\{model="digits",version="2",rayfront_process="ingress-[^"]+"\} 70\.0$',
        metrics,
        re.M,
    ), metrics


def test_rollout_over_two_ingress_processes_is_one_rollout(tmp_path_factory):
    """Two gateway processes share the port: a pause that lands on either holds, and the
    judging process counts the traffic both saw before it promotes."""
    root = _two_digits_versions(tmp_path_factory.mktemp("canary2"))
    server = start_server(
        root,
        tmp_path_factory.mktemp("canary2-logs") / "serve.log",
        "--admin-token",
        ADMIN_TOKEN,
        "--gateway-replicas",
        "2",
    )
    try:
        _api(server, "POST", "/weights", {"weights": {"1": 100, "2": 0}})
        status, doc = _api(server, "POST", "/start", _fast_plan("2"))
        assert status == 200, doc
        status, doc = _api(server, "POST", "/pause", {"reason": "checking"})
        assert status == 200, doc
        # Whichever process took the pause, every process (on fresh connections) shows it
        # within a tick or two, and the judging one does not move the rollout on.
        time.sleep(2.5)
        for _ in range(3):
            _burst(server.http_url, 40)
            states = {_api(server, "GET", "")[1]["rollout"]["status"] for _ in range(8)}
            assert states == {"paused"}, states
        status, doc = _api(server, "POST", "/resume", {})
        assert status == 200, doc
        doc = _wait_status(
            server, lambda d: (d.get("rollout") or {}).get("status") == "promoted", 120
        )
        judged = [h for h in doc["rollout"]["history"] if h["action"] in ("advance", "promote")]
        assert judged and all(h["comparison"].get("ingress_processes") == 2 for h in judged), [
            h["comparison"] for h in judged
        ]
    finally:
        stop_server(server)
