"""Loads model versions as Ray Serve applications and tracks their health and replicas.

Each (model, version) is its own Serve application holding one ModelVersion deployment,
so a version can be deployed, autoscaled and retired without redeploying the gateway or
any other version. Applications already running (e.g. from ``serve deploy`` of the YAML
that ``rayfront serve --print-config`` writes) are reused, not redeployed.

With ``data_path: fast`` each version gets a :class:`~rayfront.transport.pool.ReplicaPool`:
:meth:`RayModelLoader.refresh` (run every second in a worker thread) lists the replicas'
published endpoints in Ray's GCS KV, probes endpoints whose connection failed (deleting
those of crashed replicas), and hands the result to the backend on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from rayfront.deploy import kv
from rayfront.errors import InternalError, NotFoundError, RayfrontError, UnavailableError
from rayfront.metrics import InferenceRecorder
from rayfront.models import ModelEntry, ServedVersion, make_scheduler
from rayfront.repository.layout import Repository
from rayfront.settings import ServerSettings
from rayfront.tensors import TensorDict
from rayfront.transport.client import probe
from rayfront.transport.pool import ReplicaPool

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 0.5


class RayHandleBackend:
    """Sends each batch as one call to a ModelVersion deployment handle.

    Capacity follows the number of running replicas (refreshed by the gateway from Serve's
    status): more calls than replicas can take would queue inside Serve's router, which
    backs off in tens of milliseconds, while queueing here lets batches grow instead.
    """

    def __init__(self, handle: Any, *, inflight_per_replica: int, replicas: int = 1) -> None:
        self._handle = handle
        self._inflight_per_replica = inflight_per_replica
        self.replicas = max(replicas, 1)

    async def execute(self, batch: TensorDict) -> TensorDict:
        from ray.exceptions import RayActorError, RayTaskError

        try:
            return await self._handle.infer.remote(batch)
        except RayTaskError as exc:
            cause = exc.cause if hasattr(exc, "cause") else None
            if isinstance(cause, RayfrontError):
                raise cause from None
            raise InternalError(f"model execution failed: {type(cause or exc).__name__}") from exc
        except RayActorError as exc:
            raise UnavailableError("model replica died while executing; retry") from exc

    def capacity(self) -> int:
        return self._inflight_per_replica * self.replicas


Backend = ReplicaPool | RayHandleBackend


class RayModelLoader:
    """:class:`rayfront.models.ModelLoader` backed by Serve applications."""

    def __init__(self, settings: ServerSettings, recorder: InferenceRecorder | None = None) -> None:
        self._settings = settings
        self._repo = Repository(settings.repository)
        self.recorder = recorder
        self._backends: dict[str, Backend] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._node_id: str | None = None

    def repository(self) -> Repository:
        return self._repo

    async def load(self, name: str) -> ModelEntry:
        from ray import serve

        from rayfront.deploy.version_app import DEPLOYMENT_NAME, version_application

        self._loop = asyncio.get_running_loop()
        if name not in self._repo.models():
            raise NotFoundError(f"model '{name}' is not in the repository {self._repo.root}")
        spec = self._repo.spec(name)
        entry = ModelEntry(name=name, spec=spec)
        running = _running_apps()
        for v in self._repo.served_versions(name):
            app_name = self._settings.version_app_name(name, v)
            if app_name not in running:
                logger.info("deploying %s (model %r version %s)", app_name, name, v)
                app = version_application(self._settings, spec, v)
                # serve.run blocks until the app is RUNNING; keep the gateway loop free.
                await asyncio.to_thread(serve.run, app, name=app_name, route_prefix=None)
            handle = serve.get_deployment_handle(DEPLOYMENT_NAME, app_name)
            backend = self._make_backend(handle, name, v, app_name)
            if isinstance(backend, ReplicaPool):
                # The app is RUNNING, so its replicas have published: start on the fast path.
                found = await asyncio.to_thread(kv.list_endpoints, app_name)
                backend.set_endpoints(found)
            self._backends[app_name] = backend
            sv = ServedVersion(
                version=str(v),
                backend=backend,
                scheduler=make_scheduler(spec, str(v), backend, self.recorder),
            )
            if isinstance(backend, ReplicaPool):
                backend.on_capacity_change = _follow_capacity(sv)
            entry.versions[str(v)] = sv
        if not entry.versions:
            raise UnavailableError(f"model '{name}' has no version to serve")
        return entry

    def _make_backend(self, handle: Any, model: str, version: int | str, app_name: str) -> Backend:
        inflight = self._settings.inflight_for(model)
        handle_backend = RayHandleBackend(handle, inflight_per_replica=inflight)
        if self._settings.data_path != "fast":
            return handle_backend
        if self._node_id is None:
            import ray

            self._node_id = ray.get_runtime_context().get_node_id()
        return ReplicaPool(
            handle_backend,
            inflight_per_replica=inflight,
            local_node_id=self._node_id,
            name=f"model {model!r} version {version}",
        )

    async def unload(self, entry: ModelEntry) -> None:
        for v, sv in entry.versions.items():
            await self._remove(entry.name, v, sv)

    async def _remove(self, model: str, version: str, sv: ServedVersion) -> None:
        """Drain the version's queue, drop its connections, delete its Serve application."""
        from ray import serve

        await sv.scheduler.close()
        app_name = self._settings.version_app_name(model, version)
        self._backends.pop(app_name, None)
        if isinstance(sv.backend, ReplicaPool):
            await sv.backend.close()
        await asyncio.to_thread(serve.delete, app_name)
        logger.info("deleted %s", app_name)

    def refresh(self, models: dict[str, ModelEntry]) -> None:
        """Update readiness, replica counts and fast-path endpoints (called periodically).

        Runs in a worker thread: Serve status and KV reads block. Changes to backends and
        batchers are handed to the event loop, which owns them.
        """
        status = _serve_status()
        if status is None:
            return
        for entry in models.values():
            for v, sv in list(entry.versions.items()):
                app_name = self._settings.version_app_name(entry.name, v)
                app = status.get(app_name)
                if app is None:
                    sv.ready, sv.reason = False, "application not running"
                    continue
                running = app["running_replicas"]
                sv.ready = app["status"] == "RUNNING" and running > 0
                sv.reason = "" if sv.ready else app["message"] or app["status"]
                backend = self._backends.get(app_name)
                if backend is None:
                    continue
                if isinstance(backend, ReplicaPool):
                    self._refresh_endpoints(app_name, backend)
                if running > 0 and backend.replicas != running:
                    self._on_loop(_set_replicas, entry.name, v, sv, backend, running)

    def _refresh_endpoints(self, app_name: str, backend: ReplicaPool) -> None:
        try:
            found = kv.list_endpoints(app_name)
        except Exception as exc:  # GCS briefly unreachable: keep the endpoints we have
            logger.warning("could not list fast-path endpoints of %s: %s", app_name, exc)
            return
        recovered: set[str] = set()
        for key in set(backend.suspects) & set(found):
            if probe(found[key], self._node_id, PROBE_TIMEOUT_S):
                recovered.add(key)
            else:
                # A crashed replica never unpublishes; Serve restarts it under a new id.
                logger.info("deleting dead fast-path endpoint %s", key)
                kv.delete(key)
                del found[key]
        if recovered or found != backend.endpoints:
            self._on_loop(backend.set_endpoints, found, recovered)

    def _on_loop(self, fn: Any, *args: Any) -> None:
        """Run ``fn(*args)`` on the gateway's event loop (inline when already on it)."""
        loop = self._loop
        if loop is None:
            fn(*args)
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            fn(*args)
        else:
            loop.call_soon_threadsafe(fn, *args)


def _set_replicas(model: str, version: str, sv: ServedVersion, backend: Backend, n: int) -> None:
    backend.replicas = n
    capacity = backend.capacity()
    if sv.scheduler.max_inflight != capacity:
        sv.scheduler.max_inflight = capacity
    logger.info(
        "model %r version %s: %d replicas, %d batches in flight", model, version, n, capacity
    )


def _follow_capacity(sv: ServedVersion) -> Any:
    def apply(capacity: int) -> None:
        if sv.scheduler.max_inflight != capacity:
            sv.scheduler.max_inflight = capacity
            logger.info(
                "version %s: %d batches in flight (fast-path endpoints changed)",
                sv.version,
                capacity,
            )

    return apply


def _enum_value(value: Any) -> str:
    """Serve's status enums print as 'ApplicationStatus.RUNNING'; compare their values."""
    return str(getattr(value, "value", value))


def _running_apps() -> set[str]:
    from ray import serve

    return {
        name
        for name, app in serve.status().applications.items()
        if _enum_value(app.status) == "RUNNING"
    }


def _serve_status() -> dict[str, dict[str, Any]] | None:
    from ray import serve

    try:
        apps = serve.status().applications
    except Exception as exc:  # a controller restart makes status briefly unreachable
        logger.warning("could not read Serve status: %s", exc)
        return None
    out: dict[str, dict[str, Any]] = {}
    for name, app in apps.items():
        replicas = 0
        for dep in app.deployments.values():
            replicas += sum(
                n for state, n in dep.replica_states.items() if _enum_value(state) == "RUNNING"
            )
        out[name] = {
            "status": _enum_value(app.status),
            "message": app.message,
            "running_replicas": replicas,
        }
    return out
