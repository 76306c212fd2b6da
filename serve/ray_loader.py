"""Loads model versions as Ray Serve applications and tracks their health and replicas.

Each (model, version) is its own Serve application holding one ModelVersion deployment,
so a version can be deployed, autoscaled and retired without redeploying the gateway or
any other version. Applications already running (e.g. from ``serve deploy`` of the YAML
that ``rayfront serve --print-config`` writes) are reused, not redeployed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from rayfront.backends import RayHandleBackend
from rayfront.errors import NotFoundError, UnavailableError
from rayfront.metrics import InferenceRecorder
from rayfront.model_table import ModelEntry, ServedVersion, make_scheduler
from rayfront.repository.layout import Repository
from rayfront.settings import ServerSettings

logger = logging.getLogger(__name__)

DEPLOYMENT_NAME = "ModelVersion"


class RayModelLoader:
    """:class:`rayfront.model_table.ModelLoader` backed by Serve applications."""

    def __init__(self, settings: ServerSettings, recorder: InferenceRecorder | None = None) -> None:
        self._settings = settings
        self._repo = Repository(settings.repository)
        self.recorder = recorder
        self._backends: dict[str, RayHandleBackend] = {}

    def repository(self) -> Repository:
        return self._repo

    async def load(self, name: str) -> ModelEntry:
        from ray import serve

        from rayfront.app import version_application

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
            backend = RayHandleBackend(
                handle, inflight_per_replica=self._settings.inflight_for(name)
            )
            self._backends[app_name] = backend
            entry.versions[str(v)] = ServedVersion(
                version=str(v),
                backend=backend,
                scheduler=make_scheduler(spec, str(v), backend, self.recorder),
            )
        if not entry.versions:
            raise UnavailableError(f"model '{name}' has no version to serve")
        return entry

    async def unload(self, entry: ModelEntry) -> None:
        from ray import serve

        for v, sv in entry.versions.items():
            await sv.scheduler.close()
            app_name = self._settings.version_app_name(entry.name, v)
            self._backends.pop(app_name, None)
            await asyncio.to_thread(serve.delete, app_name)
            logger.info("deleted %s", app_name)

    async def retire_version(self, entry: ModelEntry, version: str) -> None:
        """Remove one version's application (after a canary promotion's grace period)."""
        from ray import serve

        sv = entry.versions.pop(version, None)
        if sv is None:
            return
        await sv.scheduler.close()
        app_name = self._settings.version_app_name(entry.name, version)
        self._backends.pop(app_name, None)
        await asyncio.to_thread(serve.delete, app_name)
        logger.info("retired model %r version %s (%s deleted)", entry.name, version, app_name)

    def refresh(self, models: dict[str, ModelEntry]) -> None:
        """Update readiness and replica counts from Serve's status (called periodically)."""
        status = _serve_status()
        if status is None:
            return
        for entry in models.values():
            for v, sv in entry.versions.items():
                app_name = self._settings.version_app_name(entry.name, v)
                app = status.get(app_name)
                if app is None:
                    sv.ready, sv.reason = False, "application not running"
                    continue
                running = app["running_replicas"]
                sv.ready = app["status"] == "RUNNING" and running > 0
                sv.reason = "" if sv.ready else app["message"] or app["status"]
                backend = self._backends.get(app_name)
                if backend is not None and running > 0 and backend.replicas != running:
                    backend.replicas = running
                    sv.scheduler.max_inflight = backend.capacity()
                    logger.info(
                        "model %r version %s: %d replicas, %d batches in flight",
                        entry.name,
                        v,
                        running,
                        backend.capacity(),
                    )


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
