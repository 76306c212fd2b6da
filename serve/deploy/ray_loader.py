"""Loads model versions as Ray Serve applications and keeps each one's replica pool current.

Each (model, version) is its own Serve application holding one ModelVersion deployment,
so a version can be deployed, autoscaled and retired without redeploying the ingress or
any other version. Applications already running (e.g. from ``serve deploy`` of the YAML
that ``rayfront serve --print-config`` writes) are reused, not redeployed.

Each version gets a :class:`~rayfront.transport.pool.ReplicaPool`, the queue its requests
go to. :meth:`RayModelLoader.refresh` (every second, in a worker thread) reads Serve's
status for readiness, lists the replicas' published endpoints in Ray's GCS KV, probes
endpoints whose connection failed (deleting those of crashed replicas), and hands the
result to the pool on the event loop. Until a pool knows an endpoint (start-up, a
version scaled to zero) its requests go through the Serve handle, which queues them and
wakes the autoscaler.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections.abc import Callable
from typing import Any

from rayfront.deploy import kv
from rayfront.errors import (
    InternalError,
    NotFoundError,
    RayfrontError,
    RepositoryError,
    UnavailableError,
)
from rayfront.metrics import InferenceRecorder
from rayfront.models import ModelEntry, ServedVersion
from rayfront.repository.layout import Repository
from rayfront.repository.pbtxt import render_config
from rayfront.settings import ServerSettings
from rayfront.spec import ModelSpec
from rayfront.tensors import TensorDict
from rayfront.transport.arena import Arena
from rayfront.transport.client import probe
from rayfront.transport.frames import RequestMeta
from rayfront.transport.pool import Fallback, ReplicaPool

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 0.5


def handle_fallback(
    handle: Any,
    what: str = "",
    wait_s: float = 30.0,
    running: Callable[[], int | None] = lambda: None,
) -> Fallback:
    """Run one request through a ModelVersion's Serve handle (its ``submit`` method).

    The handle queues the request until a replica can take it: one that is restarting, or
    the first of a version scaled to zero (the queued call is what wakes it). When no
    replica was running at the call, that wait is bounded by ``wait_s``, then the client
    gets a 503; with replicas running, the request's own timeouts govern.
    """

    async def call(inputs: TensorDict, meta: RequestMeta) -> TensorDict:
        from ray.exceptions import RayActorError, RayTaskError

        response = handle.submit.remote(
            inputs, meta.timeout_us, meta.priority, meta.timing is not None
        )
        bound = wait_s if not running() else None
        try:
            async with asyncio.timeout(bound):
                outputs, timing = await response
            if meta.timing is not None and timing is not None:
                meta.timing.fill(timing)
            return outputs
        except TimeoutError:
            response.cancel()
            raise UnavailableError(
                f"{what or 'model'}: no replica could take the request within {wait_s:g}s; "
                "retry later"
            ) from None
        except RayTaskError as exc:
            cause = exc.cause if hasattr(exc, "cause") else None
            if isinstance(cause, RayfrontError):
                raise cause from None
            raise InternalError(f"model execution failed: {type(cause or exc).__name__}") from exc
        except RayActorError as exc:
            raise UnavailableError("model replica died while executing; retry") from exc

    return call


class RayModelLoader:
    """:class:`rayfront.models.ModelLoader` backed by Serve applications."""

    def __init__(self, settings: ServerSettings, recorder: InferenceRecorder | None = None) -> None:
        self._settings = settings
        self._repo = Repository(settings.repository)
        self.recorder = recorder
        self._pools: dict[str, ReplicaPool] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._node_id: str | None = None
        self._arena: Arena | None = None
        self._running: dict[str, int] = {}  # version app -> replicas running (last status)
        # version app -> why its replicas cannot be placed (until they are)
        self._pending: dict[str, str] = {}

    def repository(self) -> Repository:
        return self._repo

    def _arena_for_pools(self) -> Arena | None:
        if self._arena is None and self._settings.arena_bytes:
            try:
                self._arena = Arena(self._settings.arena_bytes)
            except OSError as exc:  # no memfd here: tensors travel through the socket
                logger.warning("no shared-memory arena (%s); tensors go through sockets", exc)
                self._settings = self._settings.model_copy(update={"arena_bytes": 0})
        return self._arena

    async def load(self, name: str, spec: ModelSpec | None = None) -> ModelEntry:
        import ray
        from ray import serve

        from rayfront.deploy.version_app import DEPLOYMENT_NAME, version_application

        self._loop = asyncio.get_running_loop()
        if self._node_id is None:
            self._node_id = ray.get_runtime_context().get_node_id()
        if name not in self._repo.models():
            raise NotFoundError(f"model '{name}' is not in the repository {self._repo.root}")
        spec = spec or self._repo.spec(name)
        entry = ModelEntry(name=name, spec=spec)
        running = _running_apps()
        digest = _config_digest(spec)
        for v in self._repo.served_versions(name):
            app_name = self._settings.version_app_name(name, v)
            key = kv.deployed_config_key(app_name)
            deployed = await asyncio.to_thread(kv.get, key) if app_name in running else None
            # A running version keeps its replicas unless its configuration changed (a new
            # config.pbtxt, or a load with a config override): then Serve rolls it over.
            if app_name not in running or (deployed is not None and deployed != digest):
                logger.info(
                    "%s %s (model %r version %s)",
                    "deploying" if app_name not in running else "redeploying (config changed)",
                    app_name,
                    name,
                    v,
                )
                app = version_application(self._settings, spec, v)
                pending = await self._deploy(app, app_name, spec)
                if pending is not None:
                    self._pending[app_name] = pending
                    logger.error("model %r version %s is not serving: %s", name, v, pending)
                await asyncio.to_thread(kv.publish, key, digest)
            elif deployed is None:
                await asyncio.to_thread(kv.publish, key, digest)
            handle = serve.get_deployment_handle(DEPLOYMENT_NAME, app_name)
            pool = ReplicaPool(
                fallback=handle_fallback(
                    handle,
                    f"model '{name}' version {v}",
                    self._settings.replica_wait_s,
                    functools.partial(self._running.get, app_name),
                ),
                local_node_id=self._node_id,
                arena=self._arena_for_pools(),
                name=f"model {name!r} version {v}",
            )
            # The app is RUNNING, so its replicas have published: start on the transport.
            pool.set_endpoints(await asyncio.to_thread(kv.list_endpoints, app_name))
            self._pools[app_name] = pool
            reason = self._pending.get(app_name)
            entry.versions[str(v)] = ServedVersion(
                version=str(v),
                queue=pool,
                ready=reason is None,
                reason=reason or "",
                failed=reason is not None,
            )
        if not entry.versions:
            raise UnavailableError(f"model '{name}' has no version to serve")
        return entry

    async def _deploy(self, app: Any, app_name: str, spec: ModelSpec) -> str | None:
        """Deploy ``app`` and wait, bounded, until it runs; None once RUNNING.

        A version whose replicas cannot be placed (a GPU the cluster lacks, resources
        taken) would keep Serve waiting forever, and with it the whole server's start.
        Past ``deploy_timeout_s`` (at once, when it needs GPUs the cluster has none of)
        its deployment stays in place, to start when the resources appear, and this
        returns why it is not serving. A deployment that fails outright raises.
        """
        from ray import serve

        await asyncio.to_thread(serve._run, app, _blocking=False, name=app_name, route_prefix=None)
        loop = asyncio.get_running_loop()
        started = loop.time()
        gpus = float(self._settings.resources_for(spec)["num_gpus"] or 0.0)
        while True:
            status = await asyncio.to_thread(_serve_status)
            app_status = (status or {}).get(app_name)
            if app_status is not None:
                if app_status["status"] == "RUNNING":
                    return None
                if app_status["status"] == "DEPLOY_FAILED":
                    raise RepositoryError(
                        f"{app_name} failed to deploy: {_first_line(app_status['message'])}"
                    )
            waited = loop.time() - started
            if gpus > 0 and waited > 2.0:
                have = await asyncio.to_thread(_cluster_gpus)
                if have < gpus:
                    return (
                        f"waiting for a GPU: each replica needs {gpus:g} and the Ray cluster "
                        f"has {have:g} (instance_group KIND_CPU serves it on CPUs)"
                    )
            if waited > self._settings.deploy_timeout_s:
                message = (app_status or {}).get("message") or "replicas not running"
                return (
                    f"not running after {self._settings.deploy_timeout_s:g}s: "
                    f"{_first_line(message)}"
                )
            await asyncio.sleep(0.5)

    async def unload(self, entry: ModelEntry) -> None:
        for v, sv in entry.versions.items():
            await self._remove(entry.name, v, sv)

    async def _remove(self, model: str, version: str, sv: ServedVersion) -> None:
        """Let requests in flight finish, drop the connections, delete the Serve application."""
        from ray import serve

        await sv.queue.close()
        app_name = self._settings.version_app_name(model, version)
        self._pools.pop(app_name, None)
        await asyncio.to_thread(serve.delete, app_name)
        await asyncio.to_thread(kv.delete, kv.deployed_config_key(app_name))
        logger.info("deleted %s", app_name)

    def refresh(self, models: dict[str, ModelEntry]) -> None:
        """Update readiness and endpoints (called periodically, in a worker thread).

        Serve status and KV reads block; changes to pools are handed to the event loop,
        which owns them. A version whose autoscaling allows zero replicas stays ready at
        zero: its next request wakes it.
        """
        status = _serve_status()
        if status is None:
            return
        for entry in models.values():
            scales_to_zero = self._settings.autoscaling_for(entry.spec).min_replicas == 0
            for v, sv in list(entry.versions.items()):
                app_name = self._settings.version_app_name(entry.name, v)
                app = status.get(app_name)
                if app is None:
                    sv.ready, sv.reason = False, "application not running"
                    continue
                running = app["running_replicas"]
                sv.replicas = running
                self._running[app_name] = running
                pending = self._pending.get(app_name)
                if pending is not None:
                    if running == 0:
                        # Cannot be placed: refuse at once rather than make requests wait.
                        sv.ready, sv.accepting, sv.reason = False, False, pending
                        sv.failed = True
                        continue
                    del self._pending[app_name]  # the resources appeared
                # Readiness is about replicas, not the app's status: a controller that is
                # recovering reports DEPLOYING over replicas that serve all along.
                failed = app["status"] in ("DEPLOY_FAILED", "DELETING")
                sv.ready = not failed and (running > 0 or scales_to_zero)
                sv.accepting = not failed and not sv.ready
                sv.failed = failed
                sv.reason = "" if sv.ready else app["message"] or app["status"]
                pool = self._pools.get(app_name)
                if pool is not None:
                    self._refresh_endpoints(app_name, pool)

    def _refresh_endpoints(self, app_name: str, pool: ReplicaPool) -> None:
        try:
            found = kv.list_endpoints(app_name)
        except Exception as exc:  # GCS briefly unreachable: keep the endpoints we have
            logger.warning("could not list the endpoints of %s: %s", app_name, exc)
            return
        recovered: set[str] = set()
        for key in set(pool.suspects) & set(found):
            if probe(found[key], self._node_id, PROBE_TIMEOUT_S):
                recovered.add(key)
            else:
                # A crashed replica never unpublishes; Serve restarts it under a new id.
                logger.info("deleting dead endpoint %s", key)
                kv.delete(key)
                del found[key]
        if recovered or found != pool.endpoints:
            self._on_loop(pool.set_endpoints, found, recovered)

    def _on_loop(self, fn: Any, *args: Any) -> None:
        """Run ``fn(*args)`` on the ingress's event loop (inline when already on it)."""
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


def _enum_value(value: Any) -> str:
    """Serve's status enums print as 'ApplicationStatus.RUNNING'; compare their values."""
    return str(getattr(value, "value", value))


def _first_line(text: str) -> str:
    return (str(text).strip().splitlines() or [""])[0][:500]


def _cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))


def _running_apps() -> set[str]:
    from ray import serve

    return {
        name
        for name, app in serve.status().applications.items()
        if _enum_value(app.status) == "RUNNING"
    }


def _config_digest(spec: ModelSpec) -> bytes:
    """What identifies a version app's configuration (the rendered config.pbtxt)."""
    return hashlib.sha256(render_config(spec).encode()).hexdigest().encode()


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
