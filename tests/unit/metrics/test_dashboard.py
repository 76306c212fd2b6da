"""The Grafana dashboard: valid JSON model, and built only on metric names that exist."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from rayfront.cli import app
from rayfront.dashboard import build, metric_names


def test_dashboard_command_prints_an_importable_dashboard():
    result = CliRunner().invoke(app, ["dashboard"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc == build()
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)) >= 6
    for panel in doc["panels"]:
        assert panel["targets"] and all(t["expr"] for t in panel["targets"])
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"


def test_dashboard_queries_only_metrics_the_server_registers():
    from rayfront.canary.gauges import CanaryMetrics
    from rayfront.metrics import ModelMetrics

    metrics = ModelMetrics()
    CanaryMetrics(metrics.registry)
    # What /metrics declares (# TYPE lines), expanded to the series each type exports.
    registered: set[str] = set()
    suffixes = {"histogram": ("_bucket", "_sum", "_count"), "counter": ("", "_total")}
    for line in metrics.render().decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            registered |= {name + s for s in suffixes.get(kind, ("",))}
    for family in metrics.registry.collect():  # families without samples yet
        registered |= {family.name + s for s in suffixes.get(family.type, ("",))}
    # The replica-count gauge is registered by the ingress (a custom collector).
    missing = metric_names() - registered - {"rayfront_model_replicas"}
    assert not missing, missing
