"""ServingDataPlane: the one implementation of the KServe v2 data plane.

Transport adapters (HTTP, gRPC) decode a request and call this; it resolves the model,
picks a version (pin, canary split or latest), validates against the model's metadata
before anything is queued, hands the tensors to that version's batcher, records metrics,
and mirrors shadow traffic without making the client wait for it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from rayfront import __version__
from rayfront.canary.controller import CanaryManager
from rayfront.errors import (
    NotFoundError,
    PermissionDeniedError,
    RayfrontError,
    UnavailableError,
)
from rayfront.metrics import ModelMetrics, RecorderGroup, failure_reason
from rayfront.model_table import ModelEntry, ModelLoader, ServedVersion
from rayfront.protocol.types import InferRequest, InferResponse, TensorDict
from rayfront.protocol.validate import validate_request
from rayfront.repository.config import spec_to_proto
from rayfront.stats import StatsAggregator

logger = logging.getLogger(__name__)

SERVER_NAME = "rayfront"
EXTENSIONS = [
    "classification",
    "model_repository",
    "model_repository(unload_dependents)",
    "schedule_policy",
    "model_configuration",
    "system_shared_memory_disabled",
    "statistics",
    "binary_tensor_data",
    "parameters",
    "rayfront_canary",
]


class ServingDataPlane:
    """Implements :class:`rayfront.protocol.dataplane.DataPlane` over a model table."""

    def __init__(
        self,
        loader: ModelLoader,
        *,
        metrics: ModelMetrics,
        stats: StatsAggregator,
        recorder: RecorderGroup | None = None,
        canary: CanaryManager | None = None,
        admin_token: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """``recorder`` must feed ``metrics`` and ``stats``; pass the one the loader's batchers
        report to, so every request and execution lands in the same counters."""
        self._loader = loader
        self._models: dict[str, ModelEntry] = {}
        self._metrics = metrics
        self._stats = stats
        self.recorder = recorder if recorder is not None else RecorderGroup(metrics, stats)
        self._canary = canary
        self._admin_token = admin_token
        self._rng = rng or random.Random()
        self._shadow_tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        self.draining = False

    # --- lifecycle ---------------------------------------------------------------------

    @property
    def models(self) -> dict[str, ModelEntry]:
        return self._models

    async def load_all(self) -> None:
        """Load every model of the repository; one bad model does not stop the others."""
        for name in self._loader.repository().models():
            try:
                await self._load(name)
            except RayfrontError as exc:
                logger.error("model %r failed to load: %s", name, exc.message)

    async def _load(self, name: str) -> ModelEntry:
        """(Re)load a model. Versions it still serves keep running; only dropped ones go.

        A version that appears on reload starts with no unpinned traffic: the split in force
        keeps its weights, so a freshly exported candidate waits for a canary or a pin.
        """
        async with self._lock:
            old = self._models.get(name)
            entry = await self._loader.load(name)
            # The split in force before the swap (a default one points at the newest version).
            previous = (
                dict(self._canary.policy(name).weights)
                if old is not None and self._canary is not None
                else {}
            )
            # No await between the swap and the policy update: no request sees a gap.
            self._models[name] = entry
            if old is not None:
                self._hold_new_versions(old, entry, previous)
            if self._canary is not None:
                self._canary.invalidate(name)
            if old is not None:
                for version, served in old.versions.items():
                    if version in entry.versions:
                        await served.scheduler.close()
                stale = {v: sv for v, sv in old.versions.items() if v not in entry.versions}
                if stale:
                    await self._loader.unload(ModelEntry(name=name, spec=old.spec, versions=stale))
            return entry

    def _hold_new_versions(
        self, old: ModelEntry, entry: ModelEntry, previous: Mapping[str, int]
    ) -> None:
        canary = self._canary
        if canary is None or not set(entry.versions) - set(old.versions):
            return
        weights = {v: w for v, w in previous.items() if v in entry.versions}
        if not weights:
            return  # the versions that had traffic are gone: the default (latest) applies
        held = {v: weights.get(v, 0) for v in entry.sorted_versions()}
        try:
            canary.set_weights(old.name, held)
        except RayfrontError as exc:  # e.g. a running rollout already owns the split
            logger.info("model %r: split left as is on reload: %s", old.name, exc.message)
            return
        logger.info(
            "model %r reloaded; new versions held at 0%% until a rollout: %s", old.name, held
        )

    async def close(self) -> None:
        """Drain: refuse new work, let queued and shadow requests finish."""
        self.draining = True
        for entry in list(self._models.values()):
            for sv in entry.versions.values():
                await sv.scheduler.close()
        if self._shadow_tasks:
            await asyncio.gather(*self._shadow_tasks, return_exceptions=True)

    def check_admin_headers(self, headers: Mapping[str, str]) -> None:
        """Admin check from request headers: ``Authorization: Bearer T`` or ``x-rayfront-admin-token``."""
        self.check_admin(admin_token_from(headers))

    def check_admin(self, token: str | None) -> None:
        """Admin calls need the configured token; with none configured they are disabled."""
        if self._admin_token is None:
            raise PermissionDeniedError(
                "admin API is disabled; start rayfront serve with --admin-token to enable it"
            )
        if token != self._admin_token:
            raise PermissionDeniedError("admin token missing or wrong")

    # --- health and metadata -----------------------------------------------------------

    async def live(self) -> bool:
        return True

    async def ready(self) -> bool:
        if self.draining:
            return False
        return all(sv.ready for e in self._models.values() for sv in e.versions.values())

    async def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}

    def _entry(self, name: str) -> ModelEntry:
        entry = self._models.get(name)
        if entry is None:
            known = ", ".join(sorted(self._models)) or "none"
            raise NotFoundError(f"unknown model '{name}' (served models: {known})")
        return entry

    def _version(self, entry: ModelEntry, version: str) -> ServedVersion:
        sv = entry.versions.get(version)
        if sv is None:
            raise NotFoundError(
                f"model '{entry.name}' has no version '{version}' "
                f"(served versions: {', '.join(entry.sorted_versions()) or 'none'})"
            )
        return sv

    async def model_metadata(self, name: str, version: str = "") -> dict[str, Any]:
        entry = self._entry(name)
        if version:
            self._version(entry, version)
        spec = entry.spec
        return {
            "name": name,
            "versions": [version] if version else entry.sorted_versions(),
            "platform": spec.platform,
            "inputs": [
                {
                    "name": t.name,
                    "datatype": t.datatype,
                    "shape": list(t.full_shape(spec.max_batch_size)),
                }
                for t in spec.inputs
            ],
            "outputs": [
                {
                    "name": t.name,
                    "datatype": t.datatype,
                    "shape": list(t.full_shape(spec.max_batch_size)),
                }
                for t in spec.outputs
            ],
        }

    async def model_ready(self, name: str, version: str = "") -> bool:
        entry = self._models.get(name)
        if entry is None:
            return False
        if version:
            sv = entry.versions.get(version)
            return bool(sv and sv.ready)
        return any(sv.ready for sv in entry.versions.values())

    async def model_config(self, name: str, version: str = "") -> Any:
        entry = self._entry(name)
        if version:
            self._version(entry, version)
        return spec_to_proto(entry.spec)

    async def statistics(self, name: str = "", version: str = "") -> dict[str, Any]:
        if name:
            entry = self._entry(name)
            if version:
                self._version(entry, version)
        return {"model_stats": self._stats.snapshot(name or None, version or None)}

    async def repository_index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        repo = self._loader.repository()
        out: list[dict[str, Any]] = []
        for name in repo.models():
            entry = self._models.get(name)
            if entry is None:
                if not ready_only:
                    out.append(
                        {"name": name, "version": "", "state": "UNAVAILABLE", "reason": "unloaded"}
                    )
                continue
            for v in entry.sorted_versions():
                sv = entry.versions[v]
                if ready_only and not sv.ready:
                    continue
                out.append(
                    {
                        "name": name,
                        "version": v,
                        "state": "READY" if sv.ready else "UNAVAILABLE",
                        "reason": sv.reason,
                    }
                )
        return out

    async def load_model(self, name: str, admin_token: str | None) -> None:
        self.check_admin(admin_token)
        if name not in self._loader.repository().models():
            raise NotFoundError(f"model '{name}' is not in the repository")
        await self._load(name)
        logger.info("model %r (re)loaded through the repository API", name)

    async def unload_model(self, name: str, admin_token: str | None) -> None:
        self.check_admin(admin_token)
        async with self._lock:
            entry = self._models.pop(name, None)
            if entry is None:
                raise NotFoundError(f"model '{name}' is not loaded")
            await self._loader.unload(entry)
        logger.info("model %r unloaded through the repository API", name)

    async def metrics_text(self) -> bytes:
        return self._metrics.render()

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
        entry = self._entry(request.model_name)
        version = self._pick_version(entry, request)
        served = self._version(entry, version)
        ok = False
        reason = ""
        outputs: TensorDict = {}
        try:
            if not served.ready:
                raise UnavailableError(
                    f"model '{entry.name}' version {version} is not ready: {served.reason or 'loading'}"
                )
            validate_request(request, entry.spec)
            outputs = await served.scheduler.submit(
                request.inputs, timeout_us=request.timeout_us, priority=request.priority
            )
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
        self._maybe_shadow(entry, version, request, outputs)
        return InferResponse(
            model_name=entry.name,
            model_version=version,
            outputs=_select_outputs(outputs, request),
            id=request.id,
        )

    def _maybe_shadow(
        self, entry: ModelEntry, served: str, request: InferRequest, outputs: TensorDict
    ) -> None:
        if self._canary is None or request.model_version:
            return
        target = self._canary.router_for(entry.name).shadow_for(served, self._rng)
        if target is None or target not in entry.versions:
            return
        task = asyncio.get_running_loop().create_task(
            self._shadow(entry, served, target, request.inputs, outputs)
        )
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def _shadow(
        self,
        entry: ModelEntry,
        stable: str,
        target: str,
        inputs: TensorDict,
        stable_out: TensorDict,
    ) -> None:
        """Mirror one request to the candidate; its answer is compared, never returned."""
        canary = self._canary
        if canary is None:
            return
        started = time.perf_counter()
        candidate_out: TensorDict | None = None
        try:
            candidate_out = await entry.versions[target].scheduler.submit(inputs)
        except RayfrontError as exc:
            logger.warning("shadow request to %s v%s failed: %s", entry.name, target, exc.message)
        except Exception:
            logger.exception("shadow request to %s v%s failed", entry.name, target)
        elapsed = time.perf_counter() - started
        ok = candidate_out is not None
        canary.record_request(entry.name, target, ok, elapsed)
        canary.record_shadow(entry.name, target, stable_out, candidate_out)
        self.recorder.record_request(
            entry.name, target, ok=ok, duration_s=elapsed, reason="" if ok else "BACKEND"
        )


def admin_token_from(headers: Mapping[str, str]) -> str | None:
    """The admin token a client sent, if any (header names are case-insensitive)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    auth = lowered.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return lowered.get("x-rayfront-admin-token")


def _select_outputs(outputs: TensorDict, request: InferRequest) -> TensorDict:
    if request.outputs is None:
        return outputs
    return {o.name: np.asarray(outputs[o.name]) for o in request.outputs}
