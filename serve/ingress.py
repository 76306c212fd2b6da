"""One ingress, assembled: registry, canary, data plane, and its HTTP and gRPC front ends.

The pieces are Ray-free; only the loader differs between ``rayfront serve`` (Serve
applications, :mod:`rayfront.deploy.ray_loader`) and in-process use (tests, Ray-free
benchmarks and the GPU probe, :class:`~rayfront.models.LocalModelLoader`). The deploy
wing's gateway binds the listeners; everything it serves is built here.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from rayfront.auth import AdminAuth
from rayfront.canary.api import canary_routes
from rayfront.canary.controller import CanaryManager, OnRetire
from rayfront.canary.shadow import ShadowMirror
from rayfront.canary.store import CanaryStore
from rayfront.dataplane import ServingDataPlane
from rayfront.metrics import ModelMetrics, RecorderGroup, ReplicaGauge
from rayfront.models import ModelLoader, ModelRegistry
from rayfront.monitor import LiveMonitor, sidecar_reference
from rayfront.payload_log import PayloadLogSettings
from rayfront.protocol.grpc_service import DEFAULT_MAX_MESSAGE_BYTES, create_grpc_server
from rayfront.protocol.http_app import DEFAULT_MAX_BODY_BYTES, HTTPApp, Route, build_http_app
from rayfront.protocol.http_codec import DEFAULT_MAX_JSON_BYTES
from rayfront.protocol.shared_memory import SharedMemoryRegistry
from rayfront.stats import StatsAggregator
from rayfront.telemetry import Board, Telemetry
from rayfront.tracing import Tracer, TracingSettings


@dataclass
class Ingress:
    """Everything one ingress process serves, wired to one metrics registry."""

    metrics: ModelMetrics
    stats: StatsAggregator
    recorder: RecorderGroup
    registry: ModelRegistry
    canary: CanaryManager
    dataplane: ServingDataPlane
    auth: AdminAuth
    shm: SharedMemoryRegistry | None = None
    shm_remote: bool = False

    def http_app(
        self,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_json_bytes: int = DEFAULT_MAX_JSON_BYTES,
        extra_routes: Sequence[Route] = (),
    ) -> HTTPApp:
        """The KServe v2 HTTP app, the canary admin API included."""
        return build_http_app(
            self.dataplane,
            self.registry,
            auth=self.auth,
            max_body_bytes=max_body_bytes,
            max_json_bytes=max_json_bytes,
            extra_routes=[*canary_routes(self.canary), *extra_routes],
            shm=self.shm,
            shm_remote=self.shm_remote,
        )

    def grpc_server(
        self,
        host: str,
        port: int,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        reuse_port: bool = False,
    ) -> tuple[grpc.aio.Server, int]:
        """A not-yet-started Triton gRPC server bound to ``host:port``, and its port."""
        return create_grpc_server(
            self.dataplane,
            host,
            port,
            repository=self.registry,
            auth=self.auth,
            max_message_bytes=max_message_bytes,
            reuse_port=reuse_port,
            shm=self.shm,
            shm_remote=self.shm_remote,
        )


def assemble(
    make_loader: Callable[[RecorderGroup], ModelLoader],
    *,
    admin_token: str | None,
    on_retire: OnRetire | None = None,
    rng: random.Random | None = None,
    shared_memory: str = "local",
    shm_dir: Path | None = None,
    board: Board | None = None,
    board_prefix: str = "rayfront/telemetry/rayfront/",
    process: str = "",
    strict_readiness: bool = False,
    tracing: TracingSettings | None = None,
    payload_log: PayloadLogSettings | None = None,
) -> Ingress:
    """Build an ingress around the loader ``make_loader`` returns (given the recorder its
    queues report to, so requests and executions land in the same counters).

    ``shared_memory`` is the server setting (local, any, off); ``shm_dir`` is where this
    server's ingress processes on one host share their region registrations (a private
    temporary directory when not given).
    """
    # One name per ingress process, for telemetry, the payload log's files and traces.
    process = process or f"ingress-{os.getpid()}"
    metrics, stats = ModelMetrics(), StatsAggregator()
    recorder = RecorderGroup(metrics, stats)
    loader = make_loader(recorder)
    registry = ModelRegistry(loader)
    metrics.registry.register(
        ReplicaGauge(
            lambda: [
                (e.name, v, sv.replicas)
                for e in list(registry.models.values())
                for v, sv in list(e.versions.items())
            ]
        )
    )
    repo = loader.repository()
    canary = CanaryManager(
        CanaryStore(repo.root),
        signature_of=lambda model, version: repo.spec(model).signature(),
        live_versions=registry.live_versions,
        version_healthy=registry.version_healthy,
        registry=metrics.registry,
        on_retire=on_retire,
    )
    registry.canary = canary
    shadow = ShadowMirror(canary, recorder, rng)
    shm: SharedMemoryRegistry | None = None
    if shared_memory != "off":
        shm = SharedMemoryRegistry(shm_dir or Path(tempfile.mkdtemp(prefix="rayfront-shm-")))
    telemetry = (
        Telemetry(board, board_prefix, process, metrics.render, stats.snapshot)
        if board is not None
        else None
    )
    if telemetry is not None:
        # Rollouts are judged on every ingress process's traffic: each publishes its
        # canary windows with its telemetry, and the judging process merges them.
        telemetry.extras["canary"] = canary.export_windows
        canary.peer_windows = lambda: telemetry.peer_field("canary")
    monitor = None
    if payload_log is not None:
        monitor = LiveMonitor(payload_log, sidecar_reference(repo.root), process=process)
        metrics.registry.register(monitor)
    dataplane = ServingDataPlane(
        registry,
        metrics=metrics,
        stats=stats,
        recorder=recorder,
        canary=canary,
        shadow=shadow,
        rng=rng,
        shared_memory=shm is not None,
        telemetry=telemetry,
        strict_readiness=strict_readiness,
        tracer=Tracer(tracing, process=process) if tracing is not None else None,
        monitor=monitor,
    )
    return Ingress(
        metrics=metrics,
        stats=stats,
        recorder=recorder,
        registry=registry,
        canary=canary,
        dataplane=dataplane,
        auth=AdminAuth(admin_token),
        shm=shm,
        shm_remote=shared_memory == "any",
    )


def describe(ingress: Ingress) -> dict[str, Any]:
    """Served models and versions, for logs."""
    return {m: e.sorted_versions() for m, e in ingress.registry.models.items()}
