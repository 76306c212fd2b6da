"""The Gateway Ray Serve deployment: KServe v2 HTTP and gRPC ingress, routing, batching.

It binds rayfront's own listeners (uvicorn + httptools for HTTP, grpc.aio for gRPC)
inside the replica instead of going through Serve's proxy: the proxy hop costs ~6 ms of
CPU per request on this class of machine and caps near 300-500 req/s, which no amount of
batching behind it can recover. With several gateway replicas the sockets use
SO_REUSEPORT, so replicas on one node share the ports and the kernel spreads connections.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from rayfront.canary.controller import CanaryManager
from rayfront.canary.store import CanaryStore
from rayfront.dataplane import ServingDataPlane
from rayfront.errors import UnavailableError
from rayfront.metrics import ModelMetrics, RecorderGroup
from rayfront.protocol.grpc_service import create_grpc_server
from rayfront.protocol.http_app import build_http_app, json_route
from rayfront.ray_loader import RayModelLoader
from rayfront.settings import ServerSettings
from rayfront.stats import StatsAggregator

logger = logging.getLogger(__name__)

STATUS_REFRESH_S = 1.0
DRAIN_TIMEOUT_S = 25.0


def _replica_rank() -> int:
    from ray import serve

    try:
        rank = serve.get_replica_context().rank
    except RuntimeError:
        return 0
    return int(getattr(rank, "rank", rank) or 0)


def listen_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A listening TCP socket; with ``reuse_port`` sibling gateway replicas can bind it too.

    SO_REUSEPORT is only set when several gateway replicas must share the port: with it,
    a stale or unrelated server on the same port would silently receive a share of the
    connections instead of this one failing loudly with "address in use".
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UnavailableError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(4096)
    sock.setblocking(False)
    return sock


class Gateway:
    """Serve deployment body; ``async __init__`` binds the ports before the replica is ready."""

    async def __init__(self, settings: dict[str, Any]) -> None:
        import uvicorn

        self.settings = ServerSettings.model_validate(settings)
        s = self.settings
        self.metrics = ModelMetrics()
        self.stats = StatsAggregator()
        # One recorder for the data plane (request outcomes) and the batchers (queue/compute).
        recorder = RecorderGroup(self.metrics, self.stats)
        self.loader = RayModelLoader(s, recorder)
        self.canary = CanaryManager(
            CanaryStore(s.repository),
            signature_of=self._signature_of,
            live_versions=self._live_versions,
            version_healthy=self._version_healthy,
            registry=self.metrics.registry,
            on_retire=self._on_retire,
        )
        self.dataplane = ServingDataPlane(
            self.loader,
            metrics=self.metrics,
            stats=self.stats,
            recorder=recorder,
            canary=self.canary,
            admin_token=s.admin_token,
        )
        await self.dataplane.load_all()
        self.loader.refresh(self.dataplane.models)

        from rayfront.canary.api import canary_routes

        app = build_http_app(
            self.dataplane,
            max_body_bytes=s.max_body_bytes,
            extra_routes=[
                json_route(*route)
                for route in canary_routes(self.canary, self.dataplane.check_admin_headers)
            ],
        )
        config = uvicorn.Config(
            app,
            loop="none",
            http="httptools",
            lifespan="off",
            access_log=False,
            log_level="warning",
            timeout_keep_alive=75,
            timeout_graceful_shutdown=DRAIN_TIMEOUT_S,
        )
        self._http = uvicorn.Server(config)
        shared = s.gateway_replicas > 1
        sock = listen_socket(s.host, s.http_port, reuse_port=shared)
        self.http_port = sock.getsockname()[1]
        self._http_task = asyncio.get_running_loop().create_task(self._http.serve(sockets=[sock]))
        self._grpc = None
        self.grpc_port = 0
        if s.grpc_port:
            self._grpc, self.grpc_port = create_grpc_server(
                self.dataplane,
                s.host,
                s.grpc_port,
                max_message_bytes=s.max_body_bytes,
                reuse_port=shared,
            )
            await self._grpc.start()
        self._background = [
            asyncio.get_running_loop().create_task(self._refresh_loop()),
            asyncio.get_running_loop().create_task(self._canary_loop()),
        ]
        logger.info(
            "rayfront gateway listening: HTTP %s:%d, gRPC %s:%s; models: %s",
            s.host,
            self.http_port,
            s.host,
            self.grpc_port or "off",
            {m: e.sorted_versions() for m, e in self.dataplane.models.items()},
        )

    # --- canary callbacks ----------------------------------------------------------------

    def _signature_of(self, model: str, version: str) -> Any:
        return self.loader.repository().spec(model).signature()

    def _live_versions(self, model: str) -> list[str]:
        entry = self.dataplane.models.get(model)
        return entry.sorted_versions() if entry else []

    def _version_healthy(self, model: str, version: str) -> bool:
        entry = self.dataplane.models.get(model)
        sv = entry.versions.get(version) if entry else None
        return bool(sv and sv.ready)

    def _on_retire(self, model: str, version: str, after_s: float) -> None:
        async def retire() -> None:
            await asyncio.sleep(after_s)
            entry = self.dataplane.models.get(model)
            if entry is not None and len(entry.versions) > 1:
                await self.loader.retire_version(entry, version)

        task = asyncio.get_running_loop().create_task(retire())
        self._background.append(task)

    # --- background loops ------------------------------------------------------------------

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(STATUS_REFRESH_S)
            await asyncio.to_thread(self.loader.refresh, self.dataplane.models)

    async def _canary_loop(self) -> None:
        """Replica rank 0 owns rollout decisions; other gateway replicas follow the state file.

        With SO_REUSEPORT the kernel spreads connections evenly, so rank 0's request windows
        are a fair sample of the traffic it judges.
        """
        owner = _replica_rank() == 0
        while True:
            await asyncio.sleep(self.settings.canary_tick_s)
            try:
                if owner:
                    await self.canary.tick()
                else:
                    self.canary.refresh()
            except Exception:
                logger.exception("canary evaluation failed; rollouts keep their current weights")

    # --- Serve hooks ----------------------------------------------------------------------

    async def check_health(self) -> None:
        if self._http_task.done():
            raise RuntimeError("HTTP listener stopped")

    async def ports(self) -> dict[str, int]:
        """The bound ports (useful when configured as 0)."""
        return {"http": self.http_port, "grpc": self.grpc_port}

    async def __del__(self) -> None:
        """Graceful shutdown: stop accepting, finish in-flight requests, then stop."""
        logger.info("gateway draining")
        for task in getattr(self, "_background", []):
            task.cancel()
        self._http.should_exit = True
        if self._grpc is not None:
            await self._grpc.stop(grace=DRAIN_TIMEOUT_S)
        await asyncio.wait_for(asyncio.shield(self._http_task), timeout=DRAIN_TIMEOUT_S + 5)
        await self.dataplane.close()
        logger.info("gateway drained")
