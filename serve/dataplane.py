"""ServingDataPlane: inference and the read-only endpoints around it, nothing else.

Transport adapters (HTTP, gRPC) decode a request and call this; it resolves the model in
the registry, picks a version (pin, canary split or latest), validates against the
model's metadata before anything is queued, hands the tensors to that version's queue,
records metrics, and lets the shadow mirror copy the request after the client's answer.
Loading, unloading and indexing models is :class:`~rayfront.models.ModelRegistry`'s job;
admin checks are :mod:`rayfront.auth`'s.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import numpy as np

from rayfront import __version__
from rayfront.canary.controller import CanaryManager
from rayfront.canary.shadow import ShadowMirror
from rayfront.errors import UnavailableError
from rayfront.metrics import ModelMetrics, RecorderGroup, failure_reason
from rayfront.models import ModelEntry, ModelRegistry, require_ready
from rayfront.monitor import LiveMonitor
from rayfront.payload_log import Payload
from rayfront.protocol.checks import validate_request
from rayfront.protocol.types import InferRequest, InferResponse
from rayfront.repository.pbtxt import spec_to_proto
from rayfront.stats import StatsAggregator
from rayfront.telemetry import Telemetry
from rayfront.tensors import TensorDict
from rayfront.tracing import Tracer

logger = logging.getLogger(__name__)

SERVER_NAME = "rayfront"
EXTENSIONS = [
    "classification",
    "model_repository",
    "model_repository(unload_dependents)",
    "schedule_policy",
    "model_configuration",
    "statistics",
    "binary_tensor_data",
    "parameters",
    "rayfront_canary",
]
SHM_EXTENSION = "system_shared_memory"


class ServingDataPlane:
    """Implements :class:`rayfront.protocol.contract.InferenceService` over a registry."""

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        metrics: ModelMetrics,
        stats: StatsAggregator,
        recorder: RecorderGroup | None = None,
        canary: CanaryManager | None = None,
        shadow: ShadowMirror | None = None,
        rng: random.Random | None = None,
        shared_memory: bool = False,
        telemetry: Telemetry | None = None,
        strict_readiness: bool = False,
        tracer: Tracer | None = None,
        monitor: LiveMonitor | None = None,
    ) -> None:
        """``recorder`` must feed ``metrics`` and ``stats``; pass the one the loader's batchers
        report to, so every request and execution lands in the same counters."""
        self.registry = registry
        self._metrics = metrics
        self._stats = stats
        self.recorder = recorder if recorder is not None else RecorderGroup(metrics, stats)
        self._canary = canary
        self._shadow = shadow
        self._rng = rng or random.Random()
        self._extensions = [*EXTENSIONS, SHM_EXTENSION] if shared_memory else list(EXTENSIONS)
        self.telemetry = telemetry
        self.strict_readiness = strict_readiness
        self.tracer = tracer
        self.monitor = monitor
        self.draining = False

    @property
    def models(self) -> dict[str, ModelEntry]:
        return self.registry.models

    async def close(self) -> None:
        """Drain: refuse new work, let queued and shadow requests finish."""
        self.draining = True
        await self.registry.close()
        if self._shadow is not None:
            await self._shadow.drain()

    # --- health and metadata -----------------------------------------------------------

    async def live(self) -> bool:
        return True

    async def ready(self) -> bool:
        if self.draining:
            return False
        versions = [sv for e in self.models.values() for sv in e.versions.values()]
        if self.strict_readiness:
            # Triton's --strict-readiness: every model of the repository must serve.
            return not self.registry.failed_models() and all(sv.ready for sv in versions)
        # A model that failed to load is UNAVAILABLE (with its reason) in the index, but
        # does not keep the models that did load from taking traffic.
        return all(sv.ready or sv.failed for sv in versions)

    async def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": self._extensions}

    def _entry(self, name: str, version: str = "") -> ModelEntry:
        entry = self.registry.entry(name)
        if version:
            entry.version(version)
        return entry

    async def model_metadata(self, name: str, version: str = "") -> dict[str, Any]:
        entry = self._entry(name, version)
        spec = entry.spec

        def tensors(items: Any) -> list[dict[str, Any]]:
            return [
                {
                    "name": t.name,
                    "datatype": t.datatype,
                    "shape": list(t.full_shape(spec.max_batch_size)),
                }
                for t in items
            ]

        return {
            "name": name,
            "versions": [version] if version else entry.sorted_versions(),
            "platform": spec.platform,
            "inputs": tensors(spec.inputs),
            "outputs": tensors(spec.outputs),
        }

    async def model_ready(self, name: str, version: str = "") -> bool:
        """Whether ``name`` (``version``) can take requests; NotFoundError when unknown.

        A model in the repository that is not serving (it failed to load, or was
        unloaded) is known, so it is "not ready", not "not found".
        """
        entry = self.models.get(name)
        if entry is None:
            if name in self.registry.repository().models():
                return False
            self.registry.entry(name)  # raises Triton's "Request for unknown model"
        assert entry is not None
        if version:
            return entry.version(version).ready
        return any(sv.ready for sv in entry.versions.values())

    async def model_config(self, name: str, version: str = "") -> Any:
        return spec_to_proto(self._entry(name, version).spec)

    async def statistics(self, name: str = "", version: str = "") -> dict[str, Any]:
        """Triton statistics of every process of the server (replicas count executions)."""
        if name:
            self._entry(name, version)
        if self.telemetry is None:
            return {"model_stats": self._stats.snapshot(name or None, version or None)}
        merged = await asyncio.to_thread(self.telemetry.statistics)
        return {
            "model_stats": [
                s
                for s in merged
                if (not name or s["name"] == name) and (not version or s["version"] == version)
            ]
        }

    async def metrics_text(self) -> bytes:
        """Prometheus text of every process of the server (see :mod:`rayfront.telemetry`)."""
        if self.telemetry is None:
            return self._metrics.render()
        return await asyncio.to_thread(self.telemetry.metrics_text)

    # --- inference ---------------------------------------------------------------------

    def _pick_version(self, entry: ModelEntry, request: InferRequest) -> str:
        if request.model_version:
            return request.model_version
        if self._canary is not None:
            picked = self._canary.router_for(entry.name).pick(request.route_key, self._rng)
            if picked in entry.versions:
                return picked
        return entry.latest

    async def infer(self, request: InferRequest) -> InferResponse:
        if self.draining:
            raise UnavailableError("server is shutting down; retry on another instance")
        started = time.perf_counter()
        entry = self.registry.entry(request.model_name)
        version = self._pick_version(entry, request)
        served = entry.version(version)
        ok = False
        reason = ""
        outputs: TensorDict = {}
        trace = request.trace
        try:
            require_ready(entry, version, served)
            validate_request(request, entry.spec)
            if trace is not None:
                trace.annotate(model=entry.name, version=version)
                trace.mark("validated")
            outputs = await served.queue.submit(
                request.inputs,
                timeout_us=request.timeout_us,
                priority=request.priority,
                timing=trace.timing if trace is not None else None,
            )
            if trace is not None:
                trace.mark("returned")
            ok = True
        except BaseException as exc:
            reason = failure_reason(exc)
            raise
        finally:
            elapsed = time.perf_counter() - started
            self.recorder.record_request(
                entry.name, version, ok=ok, duration_s=elapsed, reason=reason
            )
            if self._canary is not None:
                self._canary.record_request(entry.name, version, ok, elapsed)
        if self._shadow is not None:
            self._shadow.maybe_mirror(entry, version, request, outputs)
        if self.monitor is not None:
            self.monitor.observe(
                Payload(
                    entry.name, version, request.id, request.route_key, elapsed,
                    request.inputs, outputs,
                )
            )  # fmt: skip
        return InferResponse(
            model_name=entry.name,
            model_version=version,
            outputs=_select_outputs(outputs, request),
            id=request.id,
        )


def _select_outputs(outputs: TensorDict, request: InferRequest) -> TensorDict:
    if request.outputs is None:
        return outputs
    return {o.name: np.asarray(outputs[o.name]) for o in request.outputs}
