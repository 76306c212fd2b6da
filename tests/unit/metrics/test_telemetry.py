"""One coherent /metrics and statistics view over every process of a server."""

from __future__ import annotations

import re
import time
from pathlib import Path

import orjson
from prometheus_client.parser import text_string_to_metric_families

from rayfront.metrics import ModelMetrics
from rayfront.stats import StatsAggregator
from rayfront.telemetry import PROCESS_LABEL, STALE_S, DirectoryBoard, Telemetry, merge_metrics


def _process(board: DirectoryBoard, name: str) -> tuple[Telemetry, ModelMetrics, StatsAggregator]:
    metrics, stats = ModelMetrics(), StatsAggregator()
    return Telemetry(board, "srv/", name, metrics.render, stats.snapshot), metrics, stats


def _samples(text: bytes, name: str) -> dict[str, float]:
    """``{process: value}`` of one metric, read as Prometheus reads the exposition text."""
    out = {}
    for line in text.decode().splitlines():
        m = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if m:
            process = re.search(rf'{PROCESS_LABEL}="([^"]*)"', m.group(1))
            assert process is not None, line
            out[process.group(1)] = float(m.group(2))
    return out


def test_every_ingress_shows_every_process_when_several_publish(tmp_path: Path):
    board = DirectoryBoard(tmp_path / "board")
    ingress_a, metrics_a, _ = _process(board, "ingress-a")
    ingress_b, metrics_b, _ = _process(board, "ingress-b")
    replica, metrics_r, stats_r = _process(board, "replica-m-1")
    metrics_a.record_request("m", "1", ok=True, duration_s=0.01)
    metrics_b.record_request("m", "1", ok=True, duration_s=0.01)
    metrics_b.record_request("m", "1", ok=True, duration_s=0.01)
    metrics_r.record_execution("m", "1", batch_rows=3, compute_s=0.002)
    stats_r.record_execution("m", "1", batch_rows=3, compute_s=0.002)
    for t in (ingress_a, ingress_b, replica):
        t.publish()
    # Whichever ingress a scrape lands on, it answers the same totals.
    for view in (ingress_a, ingress_b):
        text = view.metrics_text()
        assert _samples(text, "nv_inference_request_success") == {
            "ingress-a": 1.0,
            "ingress-b": 2.0,
        }
        assert _samples(text, "nv_inference_exec_count") == {"replica-m-1": 1.0}
        stats = {s["name"]: s for s in view.statistics()}
        assert stats["m"]["execution_count"] == 1 and stats["m"]["inference_count"] == 3


def test_merged_text_declares_each_family_once_when_processes_share_names():
    text = merge_metrics(
        [
            ("p1", '# HELP x_total help\n# TYPE x_total counter\nx_total{model="m"} 1.0\n'),
            ("p2", '# HELP x_total help\n# TYPE x_total counter\nx_total{model="m"} 2.0\n'),
        ]
    ).decode()
    assert text.count("# TYPE x_total counter") == 1
    families = list(text_string_to_metric_families(text))
    assert [s.value for s in families[0].samples] == [1.0, 2.0]


def test_a_process_that_stopped_publishing_drops_out_when_stale(tmp_path: Path):
    board = DirectoryBoard(tmp_path / "board")
    view, _, _ = _process(board, "ingress-a")
    gone = orjson.dumps(
        {"process": "replica-dead", "at": time.time() - STALE_S - 1, "metrics": "", "stats": []}
    )
    board.put("srv/replica-dead", gone)
    assert "replica-dead" not in view.metrics_text().decode()


def test_board_directory_is_private_when_created(tmp_path: Path):
    board = DirectoryBoard(tmp_path / "board")
    assert (tmp_path / "board").stat().st_mode & 0o777 == 0o700
    board.put("a/b", b"1")
    assert board.items("a/") == {"a/b": b"1"}
    board.delete("a/b")
    assert board.items("a/") == {}
