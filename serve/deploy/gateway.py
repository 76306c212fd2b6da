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
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

from rayfront.deploy import kv
from rayfront.deploy.ray_loader import RayModelLoader
from rayfront.errors import UnavailableError
from rayfront.ingress import assemble, describe
from rayfront.metrics import RecorderGroup
from rayfront.protocol.http_server import HttpLimits, serve_socket, uvicorn_server
from rayfront.settings import ServerSettings

logger = logging.getLogger(__name__)

STATUS_REFRESH_S = 1.0
DRAIN_TIMEOUT_S = 25.0


def _replica_id() -> str:
    from ray import serve

    try:
        return serve.get_replica_context().replica_id.unique_id
    except RuntimeError:
        return str(os.getpid())


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _replica_rank() -> int:
    from ray import serve

    try:
        rank = serve.get_replica_context().rank
    except RuntimeError:
        return 0
    return int(getattr(rank, "rank", rank) or 0)


def shm_registry_dir(http_port: int, node_id: str) -> Path | None:
    """Where this server's ingress processes on one host share shared-memory registrations.

    One directory per user, port and Ray node (a node id is new each time a cluster
    starts), so a restarted server starts with no registrations, as Triton does, and two
    servers on one host never mix theirs. Directories of earlier runs are removed. With
    port 0 every ingress listens on its own port: each gets a private temporary one.
    """
    if not http_port:
        return None
    root = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
    prefix = f"rayfront-shm-{os.getuid()}-{http_port}-"
    mine = root / f"{prefix}{node_id[:16]}"
    for old in root.glob(f"{prefix}*"):
        if old != mine and old.is_dir() and not old.is_symlink() and old.owner() == _user():
            shutil.rmtree(old, ignore_errors=True)
    return mine


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


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
        self.settings = ServerSettings.model_validate(settings)
        s = self.settings
        self._loop = asyncio.get_running_loop()
        self._background: list[asyncio.Task[None]] = []
        self.loader: RayModelLoader | None = None

        def make_loader(recorder: RecorderGroup) -> RayModelLoader:
            self.loader = RayModelLoader(s, recorder)
            return self.loader

        self.ingress = assemble(
            make_loader,
            admin_token=s.resolve_admin_token(),
            on_retire=self._on_retire,
            shared_memory=s.shared_memory,
            shm_dir=shm_registry_dir(s.http_port, _node_id()),
            board=kv.KVBoard(),
            board_prefix=kv.telemetry_prefix(s.app_prefix),
            process=f"ingress-{_replica_id()}",
            strict_readiness=s.strict_readiness,
            tracing=s.tracing,
            payload_log=s.payload_log,
        )
        await self.ingress.registry.load_all()
        if self.ingress.dataplane.telemetry is not None:
            self.ingress.dataplane.telemetry.start()
        assert self.loader is not None
        self.loader.refresh(self.ingress.registry.models)

        self._http = uvicorn_server(
            self.ingress.http_app(max_body_bytes=s.max_body_bytes, max_json_bytes=s.max_json_bytes),
            HttpLimits(
                max_header_bytes=s.max_header_bytes,
                header_timeout_s=s.header_timeout_s,
                body_timeout_s=s.body_timeout_s,
                max_connections=s.max_connections,
                max_body_bytes=s.max_body_bytes,
            ),
            timeout_graceful_shutdown=DRAIN_TIMEOUT_S,
        )
        shared = s.gateway_replicas > 1
        sock = listen_socket(s.host, s.http_port, reuse_port=shared)
        self.http_port = sock.getsockname()[1]
        self._http_task = serve_socket(self._http, sock)
        self._grpc = None
        self.grpc_port = 0
        if s.grpc_port:
            self._grpc, self.grpc_port = self.ingress.grpc_server(
                s.host, s.grpc_port, max_message_bytes=s.max_body_bytes, reuse_port=shared
            )
            await self._grpc.start()
        self._background += [
            asyncio.get_running_loop().create_task(self._refresh_loop()),
            asyncio.get_running_loop().create_task(self._canary_loop()),
        ]
        logger.info(
            "rayfront gateway listening: HTTP %s:%d, gRPC %s:%s; models: %s",
            s.host,
            self.http_port,
            s.host,
            self.grpc_port or "off",
            describe(self.ingress),
        )

    # --- canary callbacks ----------------------------------------------------------------

    def _on_retire(self, model: str, version: str, after_s: float) -> None:
        """Schedule the retirement on the gateway's loop.

        The canary controller judges in a worker thread (``asyncio.to_thread``), where there
        is no running loop: the callback hops to the loop the gateway was built on.
        """

        async def retire() -> None:
            await asyncio.sleep(after_s)
            await self.ingress.registry.retire_version(model, version)

        def start() -> None:
            self._background.append(self._loop.create_task(retire()))

        self._loop.call_soon_threadsafe(start)

    # --- background loops ------------------------------------------------------------------

    async def _refresh_loop(self) -> None:
        assert self.loader is not None
        while True:
            await asyncio.sleep(STATUS_REFRESH_S)
            await asyncio.to_thread(self.loader.refresh, self.ingress.registry.models)

    async def _canary_loop(self) -> None:
        """Replica rank 0 owns rollout decisions; other gateway replicas follow the state file.

        With SO_REUSEPORT the kernel spreads connections evenly, so rank 0's request windows
        are a fair sample of the traffic it judges.
        """
        owner = _replica_rank() == 0
        canary = self.ingress.canary
        while True:
            await asyncio.sleep(self.settings.canary_tick_s)
            try:
                if owner:
                    await canary.tick()
                else:
                    canary.refresh()
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
        # __init__ may have failed part-way: stop only what was started.
        http = getattr(self, "_http", None)
        if http is not None:
            http.should_exit = True
        grpc_server = getattr(self, "_grpc", None)
        if grpc_server is not None:
            await grpc_server.stop(grace=DRAIN_TIMEOUT_S)
        http_task = getattr(self, "_http_task", None)
        if http_task is not None:
            await asyncio.wait_for(asyncio.shield(http_task), timeout=DRAIN_TIMEOUT_S + 5)
        ingress = getattr(self, "ingress", None)
        if ingress is not None:
            await ingress.dataplane.close()
            if ingress.dataplane.telemetry is not None:
                await ingress.dataplane.telemetry.stop()
        logger.info("gateway drained")
