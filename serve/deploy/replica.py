"""The ModelVersion Ray Serve deployment: one replica of one model version.

A replica runs a :class:`~rayfront.engine.VersionEngine` (execution instances, the
dynamic batcher, the warm-up) behind a transport server (:mod:`rayfront.transport`).
Every ingress process sends its requests here, so batches fill from all of them. The
server listens on a Unix socket in a private directory; on a multi-node cluster also on
the node's address, for ingress processes elsewhere (mutually authenticated either way).
Its endpoint is published in Ray's GCS KV under ``rayfront/ep/<app>/<replica id>``.

Serve owns the lifecycle: ``__init__`` returns (and the replica becomes ready) only once
the engine has warmed up, so no request ever meets a cold model; ``check_health`` fails
when the transport has stopped, so Serve restarts the replica; ``record_autoscaling_stats``
reports the engine's queue for :func:`rayfront.deploy.autoscaling.queue_policy`. The
``submit`` handle method is the path requests take before their ingress has discovered
an endpoint (and how a version scaled to zero is woken).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from rayfront.deploy import kv
from rayfront.engine import EngineSettings, VersionEngine
from rayfront.gpu_metrics import gpu_collector
from rayfront.metrics import ModelMetrics, RecorderGroup
from rayfront.repository.layout import Repository
from rayfront.stats import StatsAggregator
from rayfront.telemetry import Telemetry
from rayfront.tensors import TensorDict
from rayfront.tracing import StageTiming
from rayfront.transport.discovery import (
    endpoint_key,
    private_socket_path,
    remove_socket_path,
    sweep_stale_sockets,
)
from rayfront.transport.server import TransportServer

logger = logging.getLogger(__name__)

# An ingress deletes an endpoint it cannot connect to (the crash case). Re-publishing this
# often heals a deletion after a transient failure, and is one cheap GCS call.
REPUBLISH_S = 5.0
DRAIN_TIMEOUT_S = 25.0
# After unpublishing, keep answering this long: ingresses refresh endpoints every second,
# so they stop choosing this replica before it starts refusing (no retries needed).
UNPUBLISH_GRACE_S = 1.5


def _alive_nodes() -> int:
    import ray

    return sum(1 for node in ray.nodes() if node.get("Alive"))


class ModelVersion:
    """Serve deployment body for one (model, version); wrapped in version_app.py."""

    async def __init__(
        self,
        repository: str,
        model: str,
        version: int,
        engine: dict[str, Any] | None = None,
        tcp: str = "auto",
        telemetry: str = "rayfront",
    ) -> None:
        import ray
        from ray import serve

        repo = Repository(Path(repository))
        self.model = model
        self.version = str(version)
        spec = repo.spec(model)
        started = time.perf_counter()
        ctx = serve.get_replica_context()
        self._replica_id = ctx.replica_id.unique_id
        self._app_name = ctx.app_name
        # Executions, batch sizes and queue waits are counted here, where batching lives;
        # every ingress shows them through the telemetry board.
        self.metrics, self.stats = ModelMetrics(), StatsAggregator()
        gpus = gpu_collector()
        if gpus is not None:
            self.metrics.registry.register(gpus)
        self.engine = await asyncio.to_thread(
            VersionEngine.load,
            spec,
            repo.version_dir(model, version),
            self.version,
            recorder=RecorderGroup(self.metrics, self.stats),
            settings=EngineSettings.model_validate(engine or {}),
        )
        await self.engine.warm_up()
        self.telemetry = Telemetry(
            kv.KVBoard(),
            kv.telemetry_prefix(telemetry),
            f"replica-{self._app_name}-{self._replica_id}",
            self.metrics.render,
            self.stats.snapshot,
        )
        self.telemetry.start()
        self._node_id = ray.get_runtime_context().get_node_id()
        self._tcp = tcp
        self._transport = TransportServer(self.engine.handle, name=f"{model} v{version}")
        self._uds = await asyncio.to_thread(private_socket_path)
        removed = await asyncio.to_thread(sweep_stale_sockets)
        if removed:
            logger.info("removed %d socket directories left by stopped replicas", len(removed))
        host = ray.util.get_node_ip_address() if await self._wants_tcp() else None
        endpoint = await self._transport.start(
            uds_path=self._uds, host=host, node_id=self._node_id, replica=self._replica_id
        )
        self._kv_key = endpoint_key(self._app_name, self._replica_id)
        self._endpoint_json = endpoint.model_dump_json().encode()
        await asyncio.to_thread(self._publish)
        self._republish = asyncio.get_running_loop().create_task(self._republish_loop())
        logger.info(
            "model %r version %s ready in %.2fs: %s",
            model,
            version,
            time.perf_counter() - started,
            self.engine.describe(),
        )

    async def _wants_tcp(self) -> bool:
        """TCP on the node's address only when an ingress elsewhere may need it."""
        if self._tcp in ("always", "never"):
            return self._tcp == "always"
        return await asyncio.to_thread(_alive_nodes) > 1

    def _publish(self) -> None:
        kv.publish(self._kv_key, self._endpoint_json)

    def _unpublish(self) -> None:
        kv.delete(self._kv_key)

    async def _republish_loop(self) -> None:
        while True:
            await asyncio.sleep(REPUBLISH_S)
            try:
                await asyncio.to_thread(self._publish)
            except Exception as exc:  # GCS briefly unreachable: keep serving, retry later
                logger.warning("could not re-publish the transport endpoint: %s", exc)

    async def submit(
        self,
        inputs: TensorDict,
        timeout_us: int | None = None,
        priority: int = 0,
        trace: bool = False,
    ) -> tuple[TensorDict, list[float] | None]:
        """One request through a Serve handle (before the ingress knows the endpoint);
        with ``trace``, also the replica's timing (:class:`~rayfront.tracing.StageTiming`)."""
        timing = StageTiming() if trace else None
        outputs = await self.engine.submit(
            inputs, timeout_us=timeout_us, priority=priority, timing=timing
        )
        return outputs, timing.to_wire() if timing is not None else None

    def record_autoscaling_stats(self) -> dict[str, float]:
        """The engine's load this window; Serve calls this each metrics interval."""
        return self.engine.load_report()

    async def check_health(self) -> None:
        if self._republish.done():
            raise RuntimeError("the endpoint re-publishing task stopped")

    def describe(self) -> dict[str, str]:
        out = {"model": self.model, "version": self.version, **self.engine.describe()}
        if self._transport.endpoint is not None:
            out["transport"] = self._transport.endpoint.describe()
        return out

    async def __del__(self) -> None:
        """Graceful stop: unpublish first (ingresses stop choosing us), drain, then free."""
        republish = getattr(self, "_republish", None)
        if republish is not None:
            republish.cancel()
        transport = getattr(self, "_transport", None)
        if transport is not None:
            try:
                await asyncio.to_thread(self._unpublish)
                await asyncio.sleep(UNPUBLISH_GRACE_S)
            except Exception as exc:  # GCS gone at cluster shutdown; ingresses drop us anyway
                logger.warning("could not unpublish the transport endpoint: %s", exc)
            await transport.close(timeout_s=DRAIN_TIMEOUT_S)
            remove_socket_path(self._uds)
        engine = getattr(self, "engine", None)
        if engine is not None:
            await engine.close()
        telemetry = getattr(self, "telemetry", None)
        if telemetry is not None:
            await telemetry.stop()
