"""Payload log and live drift through the real server, against the digits export reference.

The server serves a repository from a URL (``file://``, as it would ``s3://``), pulled into
its local cache first.

The digits demo is exported with its training images as the reference
(``rayfront export --reference``). Held-out digits keep the drift gauge low; the same
digits with their contrast inverted push it past the "significant" line, on /metrics
(merged across the gateway's processes) and in ``rayfront drift report``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import tritonclient.http as httpclient
from serving_harness import start_server, stop_server

pytestmark = [pytest.mark.ray, pytest.mark.slow]

PSI = re.compile(
    r'^rayfront_input_drift\{(?=[^}]*input="pixels")(?=[^}]*stat="psi")[^}]*\} (?P<v>\S+)$', re.M
)


def _psi(url: str) -> float | None:
    with urllib.request.urlopen(f"http://{url}/metrics", timeout=10) as resp:
        values = [float(m["v"]) for m in PSI.finditer(resp.read().decode())]
    return max(values) if values else None


def _send(client, images: np.ndarray) -> None:
    for i in range(0, len(images), 4):
        x = images[i : i + 4]
        inp = httpclient.InferInput("pixels", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        client.infer("digits", [inp])


def _wait_psi(url: str, check, timeout_s: float = 30.0) -> float:
    deadline = time.monotonic() + timeout_s
    value = None
    while time.monotonic() < deadline:
        value = _psi(url)
        if value is not None and check(value):
            return value
        time.sleep(0.5)
    raise AssertionError(f"drift gauge never satisfied the check (last {value})")


def test_drift_gauge_and_report_rise_when_live_inputs_shift(model_repository, tmp_path):
    from rayfront.export.demos.digits import load_data
    from rayfront.repository.remote import cache_dir_for

    # The repository comes from "object storage" (file://), pulled into a local cache.
    remote = tmp_path / "bucket"
    remote.mkdir()
    shutil.copytree(model_repository / "digits", remote / "digits")
    url = f"file://{remote}"
    cache = tmp_path / "cache"
    repo = cache_dir_for(url, cache)
    logs = tmp_path / "payloads"
    server = start_server(
        remote,
        tmp_path / "serve.log",
        "--repository",
        url,
        "--repository-cache",
        str(cache),
        "--grpc-port",
        "0",
        "--payload-log",
        str(logs),
        "--payload-sample-ratio",
        "1",
    )
    assert (repo / "digits" / "1" / "model.onnx").is_file()
    try:
        client = httpclient.InferenceServerClient(server.http_url)
        held_out = load_data().x_test[:160].astype(np.float32)
        _send(client, held_out)
        calm = _wait_psi(server.http_url, lambda v: True)
        assert calm < 0.1, calm

        _send(client, 1.0 - held_out)  # inverted contrast: the same digits, other pixels
        shifted = _wait_psi(server.http_url, lambda v: v > 0.25)
        assert shifted > 0.25

        report = subprocess.run(
            [
                sys.executable, "-m", "rayfront", "drift", "report", "digits",
                "--payload-log", str(logs), "-r", str(repo), "--json",
                "--plot", str(tmp_path / "drift.png"),
            ],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert report.returncode == 0, report.stderr
        doc = json.loads(report.stdout.split("plot:")[0])
        assert doc["requests"] == 80 and doc["reference_source"].startswith("file")
        pixels = next(t for t in doc["tensors"] if t["tensor"] == "pixels")
        assert pixels["verdict"] == "significant"
        assert (tmp_path / "drift.png").stat().st_size > 1000
    finally:
        stop_server(server)
