"""Smoke run of the whole benchmark runner: every target starts, is measured and reported.

Tiny durations (``--quick``: mlp only, concurrency 1 and 4, 1 s points), so the numbers
mean nothing and nothing here asserts speed; it checks that every target ran, that
results, CSV, plots and summary were written and parse back, that the numbers are sane
(requests > 0, no errors at concurrency 1), and that no server process outlives the run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from rayfront.benchmarks.analysis.results import load_json, read_csv

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(480)]

EXPECTED_TARGETS = {
    ("batcher", "off"),
    ("batcher", "32:1000"),
    ("bare", ""),
    ("serve", ""),
    ("rayfront-http", "off"),
    ("rayfront-http", "32:1000"),
    ("rayfront-grpc", "off"),
    ("rayfront-grpc", "32:1000"),
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _leftovers(marker: str) -> list[str]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info.get("cmdline") or [])
        if marker in cmdline and proc.pid != os.getpid():
            found.append(f"{proc.pid}: {cmdline[:200]}")
    return found


def test_bench_quick_run_measures_every_target_when_run_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    cmd = [
        sys.executable, "-m", "rayfront.benchmarks", "run",
        "--quick", "--no-progress", "--out", str(out), "--startup-timeout", "180",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=450, env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]

    result = load_json(out)
    assert result.meta.config.quick
    mlp = result.model("mlp")
    assert mlp is not None
    assert mlp.raw_status == "ok", mlp.raw_reason
    assert mlp.raw_limit is not None and mlp.raw_limit.rows_per_s > 0
    assert {(t.target, t.batching) for t in mlp.targets} == EXPECTED_TARGETS
    for t in mlp.targets:
        assert t.status == "ok", f"{t.label} did not run: {t.reason}"
        assert [p.concurrency for p in t.points] == [1, 4], t.label
        for p in t.points:
            assert p.requests > 0, f"{t.label} c={p.concurrency}: no successful request"
            assert p.latency is not None and p.latency.p50_ms > 0
            assert p.rows_per_s == pytest.approx(p.req_per_s * p.request_batch)
        first = t.at(1)
        assert first is not None and first.errors == 0, (
            f"{t.label} errors at c=1: {first.error_samples if first else ''}"
        )

    rows = read_csv(out)
    assert {r.target for r in rows} == {"raw"} | {t for t, _ in EXPECTED_TARGETS}
    assert len([r for r in rows if r.target != "raw"]) == len(EXPECTED_TARGETS) * 2
    for name in ("mlp_throughput.png", "mlp_latency.png"):
        assert (out / "plots" / name).read_bytes()[:8] == PNG_MAGIC
    summary = (out / "summary.md").read_text()
    assert "## Goals" in summary and "### Recommendation for mlp" in summary
    for target, batching in EXPECTED_TARGETS:
        prefix = f"| {target} | {batching or '—'} |"
        assert prefix in summary, f"summary has no row for {target} [{batching}]"
    assert _leftovers(str(out)) == [], "server processes outlived the benchmark run"


def test_bench_ingress_quick_run_measures_every_path_when_run_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "ingress"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    cmd = [
        sys.executable, "-m", "rayfront.benchmarks", "ingress",
        "--quick", "--no-progress", "--out", str(out), "--ingress", "1,2",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=450, env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]

    import json

    doc = json.loads((out / "ingress.json").read_text())
    assert not doc.get("failures")
    points = {(p["target"], p["ingress"], p["proto"]): p for p in doc["points"]}
    expected = {("memcpy", 0, "-"), ("model", 0, "-")}
    for n in (1, 2):
        expected |= {("bare", n, "http")} | {("rayfront", n, p) for p in ("http", "grpc", "shm")}
    assert set(points) == expected
    for key, p in points.items():
        assert p["img_s"] > 0 and p["mb_s"] == pytest.approx(p["img_s"] * 602_112 / 1e6), key
        if key[0] in ("bare", "rayfront"):
            # Status of every answer and the values of the first per connection (every
            # shared-memory slot at the end) were checked by the clients; none may fail.
            assert p["errors"] == 0 and p["requests"] > 0, (key, p.get("error_samples"))
    summary = (out / "ingress.md").read_text()
    assert "| rayfront | 2 | shm |" in summary and "x bare" in summary
    assert (out / "ingress.png").read_bytes()[:8] == PNG_MAGIC
    assert len((out / "ingress.csv").read_text().splitlines()) == len(expected) + 1
    assert _leftovers(str(out)) == [], "server processes outlived the benchmark run"


def test_bench_soak_short_run_classifies_every_request_when_run_end_to_end(
    tmp_path: Path,
) -> None:
    out = tmp_path / "soak"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    cmd = [
        sys.executable, "-m", "rayfront.benchmarks", "soak", "--minutes", "0.25",
        "--clients", "4", "--invalid", "0.3", "--no-progress", "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]

    import json

    doc = json.loads((out / "soak.json").read_text())
    assert doc["sent"] > 100
    assert doc["ok"] > 0 and doc["refused"] > 0  # both halves of the mix were exercised
    assert (doc["wrong"], doc["failed"], doc["lost"]) == (0, 0, 0), doc
    assert doc["sent"] == sum(doc[k] for k in ("ok", "refused", "wrong", "failed", "lost"))
    assert doc["series"] and all(p["rss_mib"] > 0 and p["fds"] > 0 for p in doc["series"])
    assert (out / "soak.png").read_bytes()[:8] == PNG_MAGIC
    assert "| sent | req/s |" in (out / "summary.md").read_text()
    assert _leftovers(str(out)) == [], "server processes outlived the soak"
