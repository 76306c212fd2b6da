"""Real Locust against a real server: the project's users (HTTP and gRPC) run headless,
bounded in time, and every request they make succeeds, named after the version that
answered (so a load test during a canary shows per-version figures)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

LOCUSTFILE = Path(__file__).parents[2] / "benchmarks" / "load" / "locustfile.py"


@pytest.mark.parametrize("user", ["KServeHttpUser", "KServeGrpcUser"])
def test_locust_users_load_the_server_without_failures(server, tmp_path, user):
    prefix = tmp_path / "locust"
    cmd = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "-u", "4", "-r", "4", "-t", "6s", "--only-summary",
        "--host", f"http://{server.http_url}", "--grpc-host", server.grpc_url,
        "--csv", str(prefix), "--model", "digits", "--batch-size", "2", user,
    ]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    with open(f"{prefix}_stats.csv") as f:
        rows = {r["Name"]: r for r in csv.DictReader(f)}
    infer = [r for name, r in rows.items() if name.endswith(" v1")]
    assert infer, list(rows)  # named after the version that answered
    assert sum(int(r["Request Count"]) for r in infer) > 20
    assert int(rows["Aggregated"]["Failure Count"]) == 0, rows["Aggregated"]
