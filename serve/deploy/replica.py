"""The ModelVersion Ray Serve deployment: one loaded runtime, one batch per call.

The Gateway forms batches and sends each as one call, so this replica only executes. A
one-thread executor serialises executions: a second in-flight batch is decoded while the
first runs (pipelining) instead of fighting it for the cores.

Batches arrive two ways. The transport (:mod:`rayfront.transport`) is a socket server
started with the replica; its endpoint is published in Ray's GCS KV under
``rayfront/ep/<app>/<replica id>`` so every gateway finds every replica (a handle call
reaches only one). The ``infer`` handle method stays as the fallback the gateway uses
until it has discovered an endpoint. Serve's own request metrics only see handle calls,
so :meth:`ModelVersion.record_autoscaling_stats` reports the batches in flight on both
paths for :func:`rayfront.deploy.autoscaling.inflight_policy`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rayfront.deploy import kv
from rayfront.deploy.autoscaling import METRIC_INFLIGHT, METRIC_INFLIGHT_PEAK
from rayfront.repository.layout import Repository
from rayfront.runtimes import load_runtime
from rayfront.runtimes.base import Runtime
from rayfront.tensors import TensorDict
from rayfront.transport.discovery import (
    Endpoint,
    endpoint_key,
    sweep_stale_sockets,
    uds_path,
)
from rayfront.transport.server import TransportServer

logger = logging.getLogger(__name__)

# A gateway deletes an endpoint it cannot connect to (the crash case). Re-publishing this
# often heals a deletion after a transient failure, and is one cheap GCS call.
REPUBLISH_S = 5.0
DRAIN_TIMEOUT_S = 25.0
# After unpublishing, keep answering this long: gateways refresh endpoints every second,
# so they stop choosing this replica before it starts refusing (no retries needed).
UNPUBLISH_GRACE_S = 1.5


class InflightMeter:
    """Batches in flight, time-averaged and peaked between two reads (Serve's metric pushes)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.current = 0
        now = self._clock()
        self._since = now
        self._last = now
        self._area = 0.0
        self._peak = 0

    def _advance(self) -> None:
        now = self._clock()
        self._area += self.current * (now - self._last)
        self._last = now

    def enter(self) -> None:
        self._advance()
        self.current += 1
        self._peak = max(self._peak, self.current)

    def exit(self) -> None:
        self._advance()
        self.current -= 1

    def read(self) -> tuple[float, int]:
        """(time-averaged in-flight, peak) since the previous read; starts a new interval."""
        self._advance()
        span = self._last - self._since
        avg = self._area / span if span > 0 else float(self.current)
        peak = self._peak
        self._since, self._area, self._peak = self._last, 0.0, self.current
        return avg, peak


class ModelVersion:
    """Serve deployment body for one (model, version). Wrapped by ``serve.deployment`` in app.py."""

    async def __init__(
        self, repository: str, model: str, version: int, data_path: str = "handle"
    ) -> None:
        repo = Repository(Path(repository))
        self.model = model
        self.version = str(version)
        self.spec = repo.spec(model)
        started = time.perf_counter()
        self.runtime: Runtime = load_runtime(self.spec, repo.version_dir(model, version))
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{model}-v{version}")
        self._meter = InflightMeter()
        self._fastpath: TransportServer | None = None
        self._kv_key: str | None = None
        self._endpoint_json = b""
        self._republish: asyncio.Task[None] | None = None
        if data_path == "fast":
            await self._start_fastpath()
        logger.info(
            "loaded model %r version %s in %.2fs: %s",
            model,
            version,
            time.perf_counter() - started,
            self.runtime.describe(),
        )

    async def _start_fastpath(self) -> None:
        import ray
        from ray import serve

        ctx = serve.get_replica_context()
        replica_id = ctx.replica_id.unique_id
        app_name = ctx.app_name
        node_id = ray.get_runtime_context().get_node_id()
        path = uds_path(app_name, replica_id)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        removed = await asyncio.to_thread(sweep_stale_sockets, os.path.dirname(path))
        if removed:
            logger.info("removed %d fast-path sockets left by stopped replicas", len(removed))
        server = TransportServer(self.infer, name=f"{self.model} v{self.version}")
        endpoint: Endpoint = await server.start(
            uds_path=path,
            host=ray.util.get_node_ip_address(),
            node_id=node_id,
            replica=replica_id,
        )
        self._fastpath = server
        self._kv_key = endpoint_key(app_name, replica_id)
        self._endpoint_json = endpoint.model_dump_json().encode()
        await asyncio.to_thread(self._publish)
        self._republish = asyncio.get_running_loop().create_task(self._republish_loop())

    def _publish(self) -> None:
        if self._kv_key is not None:
            kv.publish(self._kv_key, self._endpoint_json)

    def _unpublish(self) -> None:
        if self._kv_key is not None:
            kv.delete(self._kv_key)

    async def _republish_loop(self) -> None:
        while True:
            await asyncio.sleep(REPUBLISH_S)
            try:
                await asyncio.to_thread(self._publish)
            except Exception as exc:  # GCS briefly unreachable: keep serving, retry later
                logger.warning("could not re-publish the fast-path endpoint: %s", exc)

    async def infer(self, inputs: TensorDict) -> TensorDict:
        """Run one batch (full tensors, batch dim included) and return every output."""
        loop = asyncio.get_running_loop()
        self._meter.enter()
        try:
            return await loop.run_in_executor(self._executor, self.runtime.infer, inputs)
        finally:
            self._meter.exit()

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Custom autoscaling metrics; Serve calls this each metrics interval.

        Handle-based "ongoing requests" miss fast-path batches, so the in-flight count
        here (both paths) is what :func:`rayfront.deploy.autoscaling.inflight_policy` scales on.
        """
        avg, peak = self._meter.read()
        return {METRIC_INFLIGHT: avg, METRIC_INFLIGHT_PEAK: float(peak)}

    def describe(self) -> dict[str, str]:
        out = {"model": self.model, "version": self.version, **self.runtime.describe()}
        if self._fastpath is not None and self._fastpath.endpoint is not None:
            out["fastpath"] = self._fastpath.endpoint.describe()
        return out

    async def __del__(self) -> None:
        """Graceful stop: unpublish first (gateways stop choosing us), drain, then free."""
        republish = getattr(self, "_republish", None)
        if republish is not None:
            republish.cancel()
        fastpath = getattr(self, "_fastpath", None)
        if fastpath is not None:
            try:
                await asyncio.to_thread(self._unpublish)
                await asyncio.sleep(UNPUBLISH_GRACE_S)
            except Exception as exc:  # GCS gone at cluster shutdown; gateways drop us anyway
                logger.warning("could not unpublish the fast-path endpoint: %s", exc)
            await fastpath.close(timeout_s=DRAIN_TIMEOUT_S)
        executor = getattr(self, "_executor", None)
        if executor is not None:
            executor.shutdown(wait=True)
        runtime = getattr(self, "runtime", None)
        if runtime is not None:
            runtime.close()
