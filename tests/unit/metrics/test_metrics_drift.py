"""Drift statistics, the payload log and the live monitor (no Ray, no server)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rayfront.drift import (
    DriftMonitor,
    bin_counts,
    ks_binned,
    profile_sample,
    profile_tensor,
    psi,
)
from rayfront.drift_report import compute_report, plot_report
from rayfront.monitor import LiveMonitor
from rayfront.payload_log import (
    Payload,
    PayloadLog,
    PayloadLogSettings,
    decode_tensor,
    log_files,
    read_records,
)

RNG = np.random.default_rng(0)
REFERENCE = RNG.standard_normal((2000, 8)).astype(np.float32)


def test_psi_and_ks_stay_low_when_live_data_matches_the_reference():
    prof = profile_tensor(REFERENCE)
    live = np.random.default_rng(1).standard_normal((500, 8)).astype(np.float32)
    counts = bin_counts(prof, live)
    assert counts.sum() == live.size
    assert psi(prof.freqs, counts) < 0.05
    assert ks_binned(prof.freqs, counts) < 0.05


def test_psi_and_ks_rise_when_live_data_is_shifted():
    prof = profile_tensor(REFERENCE)
    shifted = np.random.default_rng(1).standard_normal((500, 8)).astype(np.float32) + 1.5
    counts = bin_counts(prof, shifted)
    assert psi(prof.freqs, counts) > 0.25
    assert ks_binned(prof.freqs, counts) > 0.4


def test_profile_keeps_quantile_bins_and_per_feature_stats_when_rows_are_small():
    prof = profile_tensor(REFERENCE)
    assert prof.kind == "continuous" and len(prof.edges) == 9
    np.testing.assert_allclose(prof.freqs, 0.1, atol=0.01)  # quantile bins: equal shares
    assert len(prof.feature_mean) == 8 and len(prof.feature_std) == 8
    wide = profile_tensor(np.zeros((4, 3, 32, 32), np.float32) + np.arange(4)[:, None, None, None])
    assert wide.feature_mean == []  # 3072 features: not listed


def test_categorical_profile_counts_top_values_and_other_when_ints_arrive():
    ids = np.array([[1, 1, 2, 3], [1, 2, 2, 9]], np.int64)
    prof = profile_tensor(ids)
    assert prof.kind == "categorical" and prof.categories[:2] == [1, 2]
    counts = bin_counts(prof, np.array([[1, 2, 7, 7]], np.int64))
    assert counts.tolist()[: len(prof.categories)][:2] == [1.0, 1.0]
    assert counts[-1] == 2.0  # 7 was never seen: "other"
    unseen = bin_counts(prof, np.full((4, 4), 99, np.int64))
    assert psi(prof.freqs, unseen) > 1.0


def test_profile_refuses_tensors_without_numbers_when_given_strings():
    with pytest.raises(ValueError, match="cannot profile a <U1 tensor"):
        profile_tensor(np.array(["a"]))


def test_drift_monitor_forgets_buckets_when_they_leave_the_window():
    now = [0.0]
    ref = profile_sample("test", {"x": REFERENCE}, {})
    mon = DriftMonitor(ref, window_s=30, bucket_s=10, clock=lambda: now[0])
    mon.observe({"x": REFERENCE[:200] + 3.0}, {})
    shifted = dict(((r, t, s), v) for r, t, s, v in mon.snapshot())
    assert shifted[("input", "x", "psi")] > 0.25
    now[0] = 45.0  # the shifted bucket is out of the 30 s window
    mon.observe({"x": REFERENCE[200:400]}, {})
    calm = dict(((r, t, s), v) for r, t, s, v in mon.snapshot())
    assert calm[("input", "x", "psi")] < 0.1


def _settings(tmp_path: Path, **kw: object) -> PayloadLogSettings:
    return PayloadLogSettings(directory=str(tmp_path / "payloads"), **kw)


def test_payload_log_round_trips_tensors_and_metadata_when_sampled(tmp_path):
    log = PayloadLog(_settings(tmp_path, sample_ratio=1.0), process="p1")
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    words = np.array([b"a", b"bc"], dtype=object)
    log.record(
        Payload(
            model="m",
            version="2",
            request_id="r1",
            route_key="user-7",
            latency_s=0.0123,
            inputs={"x": x, "s": words},
            outputs={"y": x * 2},
        )
    )
    assert log.flush()
    (rec,) = list(read_records(tmp_path / "payloads", "m"))
    assert rec["version"] == "2" and rec["id"] == "r1" and rec["route_key"] == "user-7"
    np.testing.assert_array_equal(decode_tensor(rec["inputs"]["x"]), x)
    np.testing.assert_array_equal(decode_tensor(rec["outputs"]["y"]), x * 2)
    assert decode_tensor(rec["inputs"]["s"]).tolist() == [b"a", b"bc"]
    log.close()


def test_payload_log_keeps_big_tensors_as_headers_when_over_the_cap(tmp_path):
    log = PayloadLog(_settings(tmp_path, sample_ratio=1.0, max_tensor_kb=1), process="p1")
    big = np.zeros((1, 1024), np.float32)  # 4 KiB
    log.record(
        Payload(
            model="m",
            version="1",
            request_id="",
            route_key=None,
            latency_s=0.0,
            inputs={"x": big},
            outputs={},
        )
    )
    log.flush()
    (rec,) = list(read_records(tmp_path / "payloads", "m"))
    assert rec["inputs"]["x"] == {"datatype": "FP32", "shape": [1, 1024], "truncated": True}
    assert decode_tensor(rec["inputs"]["x"]) is None
    log.close()


def test_payload_log_rotates_and_bounds_disk_when_files_fill(tmp_path):
    settings = _settings(tmp_path, sample_ratio=1.0, max_file_mb=0.01, max_files=3)
    log = PayloadLog(settings, process="p1")
    x = np.zeros((1, 256), np.float32)  # ~1.4 KB a record: 10 KB files hold ~7
    for i in range(60):
        log.record(
            Payload(
                model="m",
                version="1",
                request_id=str(i),
                route_key=None,
                latency_s=0.0,
                inputs={"x": x},
                outputs={},
            )
        )
    assert log.flush()
    files = log_files(tmp_path / "payloads", "m")
    assert [f.name for f in files] == [
        "payloads-p1.jsonl.2",
        "payloads-p1.jsonl.1",
        "payloads-p1.jsonl",
    ]
    assert all(f.stat().st_size <= 0.01 * 1024 * 1024 for f in files)
    ids = [int(r["id"]) for r in read_records(tmp_path / "payloads", "m")]
    assert ids == sorted(ids) and ids[-1] == 59 and len(ids) < 60  # oldest gone, order kept
    log.close()


def test_payload_log_drops_instead_of_growing_when_the_writer_is_behind(tmp_path):
    log = PayloadLog(_settings(tmp_path, sample_ratio=1.0, queue_size=2), process="p1")
    log.close()  # no writer: the queue can only fill
    for i in range(5):
        log.record(
            Payload(
                model="m",
                version="1",
                request_id=str(i),
                route_key=None,
                latency_s=0.0,
                inputs={"x": np.zeros((1, 2), np.float32)},
                outputs={},
            )
        )
    assert log.dropped == 3


def test_payload_log_samples_about_its_ratio_when_configured(tmp_path):
    import random

    log = PayloadLog(_settings(tmp_path, sample_ratio=0.2), process="p", rng=random.Random(3))
    picked = sum(log.sampled() for _ in range(5000))
    assert 850 < picked < 1150
    log.close()


def test_payload_log_settings_refuse_relative_directory_when_validated():
    with pytest.raises(ValueError, match="payload log directory 'logs' must be absolute"):
        PayloadLogSettings(directory="logs")


def test_live_monitor_exports_drift_gauges_and_logs_when_requests_arrive(tmp_path):
    from prometheus_client import CollectorRegistry, generate_latest

    ref = profile_sample("test", {"x": REFERENCE}, {"y": REFERENCE * 2})
    monitor = LiveMonitor(
        _settings(tmp_path, sample_ratio=1.0),
        lambda model, version: ref if version == "1" else None,
        process="ingress-a",
    )
    registry = CollectorRegistry()
    registry.register(monitor)
    for i in range(20):
        x = REFERENCE[i * 10 : (i + 1) * 10] + 2.0  # shifted inputs
        monitor.observe(
            Payload(
                model="m",
                version="1",
                request_id=str(i),
                route_key=None,
                latency_s=0.001,
                inputs={"x": x},
                outputs={"y": x * 2},
            )
        )
    monitor.observe(
        Payload(
            model="m",
            version="9",
            request_id="n",
            route_key=None,
            latency_s=0.001,
            inputs={"x": REFERENCE[:1]},
            outputs={},
        )
    )
    assert monitor.log.flush()
    text = generate_latest(registry).decode()
    line = next(
        ln
        for ln in text.splitlines()
        if ln.startswith('rayfront_input_drift{input="x",model="m",stat="psi",version="1"}')
    )
    assert float(line.split()[-1]) > 0.25
    assert 'rayfront_output_drift{model="m",output="y",stat="ks",version="1"}' in text
    assert 'version="9"' not in text  # no reference: logged, no gauges
    assert 'rayfront_payload_log_records_total{outcome="logged"} 21.0' in text
    monitor.close()


def test_drift_report_flags_shifted_tensors_and_plots_when_log_has_records(tmp_path):
    ref = profile_sample("file ref.npz (2000 rows)", {"x": REFERENCE}, {"y": REFERENCE * 2})
    log = PayloadLog(_settings(tmp_path, sample_ratio=1.0), process="p1")
    for i in range(30):
        x = REFERENCE[i * 5 : (i + 1) * 5]
        log.record(
            Payload(
                model="m",
                version="1",
                request_id=str(i),
                route_key=None,
                latency_s=0.0,
                inputs={"x": x + 3.0},
                outputs={"y": x * 2},
            )
        )
    log.flush()
    report = compute_report(ref, tmp_path / "payloads", "m", "1")
    by = {(t.role, t.tensor): t for t in report.tensors}
    assert report.requests == 30
    assert by[("input", "x")].verdict == "significant"
    assert by[("output", "y")].verdict == "stable"
    assert by[("input", "x")].live_mean == pytest.approx(3.0, abs=0.3)
    png = plot_report(report, ref, tmp_path / "drift.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log.close()


def test_drift_report_command_prints_json_and_refuses_unknown_model_when_run(tmp_path):
    from typer.testing import CliRunner

    from rayfront.cli import app
    from rayfront.repository.sidecar import Provenance, write_sidecar

    vdir = tmp_path / "repo" / "m" / "1"
    vdir.mkdir(parents=True)
    ref = profile_sample("test", {"x": REFERENCE}, {})
    write_sidecar(
        vdir,
        Provenance(source="t", created_at="2026-12-07T00:00:00Z", exporter="legacy", reference=ref),
    )
    log = PayloadLog(_settings(tmp_path, sample_ratio=1.0), process="p1")
    log.record(
        Payload(
            model="m",
            version="1",
            request_id="0",
            route_key=None,
            latency_s=0.0,
            inputs={"x": REFERENCE[:50]},
            outputs={},
        )
    )
    log.flush()
    args = ["drift", "report", "m", "--payload-log", str(tmp_path / "payloads")]
    result = CliRunner().invoke(app, [*args, "-r", str(tmp_path / "repo"), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["version"] == "1" and doc["tensors"][0]["verdict"] == "stable"
    missing = CliRunner().invoke(app, ["drift", "report", "nope", "--payload-log", str(tmp_path)])
    assert missing.exit_code == 1
    assert "no payload log records for model 'nope'" in missing.output
    log.close()


def test_payload_log_drops_over_its_byte_budget_when_tensors_are_big(tmp_path):
    log = PayloadLog(_settings(tmp_path, sample_ratio=1.0, max_queue_mb=0.01), process="p1")
    log.close()  # no writer: whatever is admitted stays queued
    small = np.zeros((1, 256), np.float32)  # 1 KiB: fits the 10 KiB budget
    big = np.zeros((1, 4096), np.float32)  # 16 KiB: never fits
    for arr in (small, big, small):
        log.record(Payload("m", "1", "", None, 0.0, {"x": arr}, {}))
    assert log.dropped == 1


def test_payload_log_counts_a_failing_disk_and_never_raises_when_writes_fail(tmp_path):
    blocker = tmp_path / "payloads"
    blocker.write_text("a file where the log folder should be")
    log = PayloadLog(PayloadLogSettings(directory=str(blocker), sample_ratio=1.0), process="p")
    log.record(Payload("m", "1", "", None, 0.0, {"x": np.zeros((1, 2), np.float32)}, {}))
    assert log.flush()
    assert log.failed == 1 and log.logged == 0
    log.close()
