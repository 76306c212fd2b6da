"""The Grafana dashboard for rayfront, built from the metric names the server exports.

``rayfront dashboard > rayfront.json`` prints it; import it in Grafana and pick the
Prometheus data source that scrapes ``/metrics``. Every panel sums over
``rayfront_process`` (each ingress and replica process labels its own samples), so the
figures are the whole server's whichever process Prometheus scraped.

The panels answer what an operator asks first: is it serving (request and failure rates
by model and version), is it slow and where (end-to-end, queue and compute latency
percentiles), is batching working (batch sizes, isolations), is it scaled right
(replicas, queue), and what a rollout is doing (canary weights, decisions, rollbacks).
"""

from __future__ import annotations

import json
from typing import Any

import typer

#: (title, unit, [(PromQL, legend)]) per panel, in display order.
PANELS: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    (
        "Requests/s by model and version",
        "reqps",
        (
            (
                "sum by (model, version) (rate(nv_inference_request_success[1m]))",
                "{{model}} v{{version}} ok",
            ),
            (
                "sum by (model, version, reason) (rate(nv_inference_request_failure[1m]))",
                "{{model}} v{{version}} failed ({{reason}})",
            ),
        ),
    ),
    (
        "Request latency p50 / p99 (end to end, at the ingress)",
        "s",
        (
            (
                "histogram_quantile(0.5, sum by (le, model) "
                "(rate(rayfront_request_duration_seconds_bucket[1m])))",
                "{{model}} p50",
            ),
            (
                "histogram_quantile(0.99, sum by (le, model) "
                "(rate(rayfront_request_duration_seconds_bucket[1m])))",
                "{{model}} p99",
            ),
        ),
    ),
    (
        "Where the time goes: queue vs compute per request (us)",
        "µs",
        (
            (
                "sum by (model) (rate(nv_inference_queue_duration_us[1m])) / "
                "sum by (model) (rate(nv_inference_request_success[1m]))",
                "{{model}} queue",
            ),
            (
                "sum by (model) (rate(nv_inference_compute_infer_duration_us[1m])) / "
                "sum by (model) (rate(nv_inference_request_success[1m]))",
                "{{model}} compute",
            ),
        ),
    ),
    (
        "Batching: mean batch size and isolations",
        "short",
        (
            (
                "sum by (model) (rate(rayfront_batch_size_sum[1m])) / "
                "sum by (model) (rate(rayfront_batch_size_count[1m]))",
                "{{model}} rows per batch",
            ),
            (
                "sum by (model) (rate(rayfront_batch_isolations_total[5m]))",
                "{{model}} poisoned-batch splits/s",
            ),
        ),
    ),
    (
        "Replicas and pending requests",
        "short",
        (
            (
                "max by (model, version) (rayfront_model_replicas)",
                "{{model}} v{{version}} replicas",
            ),
            (
                "sum by (model) (nv_inference_pending_request_count)",
                "{{model}} pending",
            ),
        ),
    ),
    (
        "Canary: weights, rollbacks",
        "short",
        (
            ("max by (model, version) (rayfront_canary_weight)", "{{model}} v{{version}} weight %"),
            (
                "sum by (model) (increase(rayfront_canary_rollbacks_total[1h]))",
                "{{model}} rollbacks (1h)",
            ),
        ),
    ),
)


def metric_names() -> set[str]:
    """The series names the dashboard queries (the tests check the server exports them)."""
    import re

    return {
        name
        for _, _, queries in PANELS
        for expr, _ in queries
        for name in re.findall(r"\b((?:nv|rayfront)_[a-z_]+)\b", expr)
    }


def build() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model (schema 39, a Prometheus data source input)."""
    panels = []
    for i, (title, unit, queries) in enumerate(PANELS):
        panels.append(
            {
                "id": i + 1,
                "type": "timeseries",
                "title": title,
                "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
                "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [
                    {"refId": chr(ord("A") + j), "expr": expr, "legendFormat": legend}
                    for j, (expr, legend) in enumerate(queries)
                ],
            }
        )
    return {
        "__inputs": [
            {
                "name": "DS_PROMETHEUS",
                "label": "Prometheus",
                "type": "datasource",
                "pluginId": "prometheus",
                "pluginName": "Prometheus",
            }
        ],
        "title": "rayfront",
        "uid": "rayfront",
        "tags": ["rayfront", "inference"],
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "10s",
        "panels": panels,
    }


def dashboard_command() -> None:
    """Print the Grafana dashboard JSON (import it in Grafana; Prometheus scrapes /metrics)."""
    typer.echo(json.dumps(build(), indent=2))
