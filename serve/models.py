"""The registry of served models: load, reload, unload and index, apart from inference.

A :class:`ModelLoader` turns a repository model into :class:`ServedVersion` objects, each
the queue a request for that version goes to: the Ray loader deploys one Serve
application per version and hands requests to its replicas' batchers over the transport
(:mod:`rayfront.deploy.ray_loader`); :class:`LocalModelLoader` runs each version's
:class:`~rayfront.engine.VersionEngine` in this process. :class:`ModelRegistry` owns the table of live models and every change to it:
a reload keeps the versions it still serves running, and a version that appears on reload
gets no unpinned traffic until a rollout gives it some.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rayfront.batching import VersionQueue
from rayfront.engine import EngineSettings, VersionEngine
from rayfront.errors import (
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    RayfrontError,
    UnavailableError,
)
from rayfront.metrics import InferenceRecorder
from rayfront.repository.layout import Repository
from rayfront.repository.pbtxt import proto_to_spec
from rayfront.spec import ModelSpec

if TYPE_CHECKING:
    from rayfront.canary.controller import CanaryManager

logger = logging.getLogger(__name__)

#: Models loaded at once at start (each waits on its replicas in a thread).
LOAD_CONCURRENCY = 4


@dataclass
class ServedVersion:
    """One live version: the queue its requests go to, and whether it can take them."""

    version: str
    queue: VersionQueue
    ready: bool = True
    reason: str = ""
    # Replicas running, as the deployment platform last reported (None: not reported).
    replicas: int | None = None
    # Not ready, but requests wait (bounded) for a replica that is starting: a restart
    # after a crash, or a version waking from zero.
    accepting: bool = False
    # Cannot serve until something changes (its replicas fail to start, or need resources
    # the cluster lacks): it does not hold the server's readiness (see strict_readiness).
    failed: bool = False


@dataclass
class ModelEntry:
    """One served model: its spec (shared by all versions) and its live versions."""

    name: str
    spec: ModelSpec
    versions: dict[str, ServedVersion] = field(default_factory=dict)

    @property
    def latest(self) -> str:
        """Highest ready version: where unpinned traffic goes without a canary policy."""
        ready = [v for v, sv in self.versions.items() if sv.ready] or list(self.versions)
        if not ready:
            raise NotFoundError(f"model '{self.name}' has no loaded versions")
        return max(ready, key=int)

    def sorted_versions(self) -> list[str]:
        return sorted(self.versions, key=int)

    def version(self, version: str) -> ServedVersion:
        """The live ``version``, or NotFoundError listing the served ones."""
        sv = self.versions.get(version)
        if sv is None:
            # Triton's wording first: clients match on it.
            raise NotFoundError(
                f"Request for unknown model: '{self.name}' version {version} is not found "
                f"(served versions: {', '.join(self.sorted_versions()) or 'none'})"
            )
        return sv


class ModelLoader(Protocol):
    """Loads and unloads the versions of a model into backends."""

    async def load(self, name: str, spec: ModelSpec | None = None) -> ModelEntry:
        """Serve ``name``'s versions with ``spec`` (default: its config.pbtxt)."""
        ...

    async def unload(self, entry: ModelEntry) -> None: ...

    def repository(self) -> Repository: ...


class LocalModelLoader:
    """Loads every served version in this process as a VersionEngine (no Ray)."""

    def __init__(
        self,
        root: Path,
        recorder: InferenceRecorder | None = None,
        settings: EngineSettings | None = None,
    ) -> None:
        self._repo = Repository(root)
        self._recorder = recorder
        self._settings = settings

    def repository(self) -> Repository:
        return self._repo

    async def load(self, name: str, spec: ModelSpec | None = None) -> ModelEntry:
        if name not in self._repo.models():
            raise NotFoundError(f"model '{name}' is not in the repository {self._repo.root}")
        spec = spec or self._repo.spec(name)
        entry = ModelEntry(name=name, spec=spec)
        for v in self._repo.served_versions(name):
            engine = await asyncio.to_thread(
                VersionEngine.load,
                spec,
                self._repo.version_dir(name, v),
                str(v),
                recorder=self._recorder,
                settings=self._settings,
            )
            await engine.warm_up()
            entry.versions[str(v)] = ServedVersion(version=str(v), queue=engine)
        logger.info("loaded model %r versions %s in-process", name, entry.sorted_versions())
        return entry

    async def unload(self, entry: ModelEntry) -> None:
        for sv in entry.versions.values():
            await sv.queue.close()


def override_spec(name: str, config: str) -> ModelSpec:
    """The spec of a load request's ``config`` override (Triton's model configuration JSON)."""
    from google.protobuf import json_format
    from tritonclient.grpc import model_config_pb2

    try:
        proto = json_format.Parse(config, model_config_pb2.ModelConfig())
    except (json_format.ParseError, ValueError, TypeError) as exc:
        raise InvalidArgumentError(
            f"failed to load '{name}': the 'config' parameter is not a model configuration "
            f"in JSON: {_first_line(exc)}"
        ) from None
    if proto.name and proto.name != name:
        raise InvalidArgumentError(
            f"failed to load '{name}': the 'config' override names model '{proto.name}'"
        )
    proto.name = name
    try:
        return proto_to_spec(proto, name_hint=name)
    except RayfrontError as exc:
        raise InvalidArgumentError(
            f"failed to load '{name}': config override: {exc.message}"
        ) from None


class ModelRegistry:
    """The live models, and the repository operations that change them (admin, not inference)."""

    def __init__(self, loader: ModelLoader, canary: CanaryManager | None = None) -> None:
        self._loader = loader
        self.canary = canary
        self._models: dict[str, ModelEntry] = {}
        #: Models whose last load failed, with the reason (shown by the repository index).
        self._failed: dict[str, str] = {}
        self._lock = asyncio.Lock()

    @property
    def models(self) -> dict[str, ModelEntry]:
        return self._models

    def repository(self) -> Repository:
        return self._loader.repository()

    # --- lookups (hot path: no awaits, no locks) ----------------------------------------

    def entry(self, name: str) -> ModelEntry:
        """The live model ``name``, or NotFoundError listing the served ones."""
        entry = self._models.get(name)
        if entry is None:
            known = ", ".join(sorted(self._models)) or "none"
            raise NotFoundError(
                f"Request for unknown model: '{name}' is not found (served models: {known})"
            )
        return entry

    def live_versions(self, model: str) -> list[str]:
        entry = self._models.get(model)
        return entry.sorted_versions() if entry else []

    def version_healthy(self, model: str, version: str) -> bool:
        entry = self._models.get(model)
        sv = entry.versions.get(version) if entry else None
        return bool(sv and sv.ready)

    # --- lifecycle ---------------------------------------------------------------------

    def failed_models(self) -> dict[str, str]:
        """Models whose last load failed, with the reason."""
        return dict(self._failed)

    async def load_all(self) -> None:
        """Load every model of the repository; one bad model does not stop the others.

        A model that fails to load, for whatever reason (a bad config, a broken file, a
        replica that raises while starting), is listed by the repository index as
        UNAVAILABLE with the reason, and everything else serves.
        """
        try:
            names = self.repository().models()
        except RayfrontError as exc:
            logger.error("cannot list the model repository: %s", exc.message)
            return
        # Side by side: one model waiting for resources must not hold up the rest.
        slots = asyncio.Semaphore(LOAD_CONCURRENCY)

        async def one(name: str) -> None:
            async with slots:
                try:
                    await self._load(name)
                except Exception as exc:
                    reason = exc.message if isinstance(exc, RayfrontError) else _first_line(exc)
                    self._failed[name] = reason
                    logger.error("model %r failed to load: %s", name, reason)

        await asyncio.gather(*(one(name) for name in names))

    async def load_model(self, name: str, config: str | None = None) -> None:
        """(Re)load ``name`` from the repository (the repository API's load).

        ``config`` is Triton's override: a model configuration in JSON that replaces
        config.pbtxt for this load (in memory; the file is not changed). A version whose
        configuration changed is redeployed.
        """
        if name not in self.repository().models():
            raise NotFoundError(f"failed to load '{name}': it is not in the model repository")
        spec = override_spec(name, config) if config is not None else None
        try:
            await self._load(name, spec)
        except RayfrontError as exc:
            self._failed[name] = exc.message
            raise type(exc)(f"failed to load '{name}': {exc.message}") from None
        except Exception as exc:
            self._failed[name] = _first_line(exc)
            raise InternalError(f"failed to load '{name}': {_first_line(exc)}") from None
        logger.info(
            "model %r (re)loaded through the repository API%s",
            name,
            " with a config override" if spec is not None else "",
        )

    async def unload_model(self, name: str) -> None:
        """Stop serving ``name`` (the repository API's unload)."""
        async with self._lock:
            entry = self._models.pop(name, None)
            if entry is None:
                raise NotFoundError(f"model '{name}' is not loaded")
            await self._loader.unload(entry)
        logger.info("model %r unloaded through the repository API", name)

    async def retire_version(self, model: str, version: str) -> None:
        """Stop one version of a model that keeps others (after a promotion's grace period)."""
        async with self._lock:
            entry = self._models.get(model)
            if entry is None or version not in entry.versions or len(entry.versions) < 2:
                return
            sv = entry.versions.pop(version)
            await self._loader.unload(
                ModelEntry(name=model, spec=entry.spec, versions={version: sv})
            )
        logger.info("retired model %r version %s", model, version)

    async def _load(self, name: str, spec: ModelSpec | None = None) -> ModelEntry:
        """(Re)load a model. Versions it still serves keep running; only dropped ones go.

        A version that appears on reload starts with no unpinned traffic: the split in force
        keeps its weights, so a freshly exported candidate waits for a canary or a pin.
        """
        async with self._lock:
            old = self._models.get(name)
            entry = await self._loader.load(name, spec)
            # The split in force before the swap (a default one points at the newest version).
            previous = (
                dict(self.canary.policy(name).weights)
                if old is not None and self.canary is not None
                else {}
            )
            # No await between the swap and the policy update: no request sees a gap.
            self._models[name] = entry
            self._failed.pop(name, None)
            if old is not None:
                self._hold_new_versions(old, entry, previous)
            if self.canary is not None:
                self.canary.invalidate(name)
            if old is not None:
                for version, served in old.versions.items():
                    if version in entry.versions:
                        await served.queue.close()
                stale = {v: sv for v, sv in old.versions.items() if v not in entry.versions}
                if stale:
                    await self._loader.unload(ModelEntry(name=name, spec=old.spec, versions=stale))
            return entry

    def _hold_new_versions(
        self, old: ModelEntry, entry: ModelEntry, previous: Mapping[str, int]
    ) -> None:
        canary = self.canary
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

    async def repository_index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for name in self.repository().models():
            entry = self._models.get(name)
            if entry is None:
                if not ready_only:
                    reason = self._failed.get(name, "unloaded")
                    out.append(
                        {"name": name, "version": "", "state": "UNAVAILABLE", "reason": reason}
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

    async def close(self) -> None:
        """Drain every version's queue (the server is stopping)."""
        for entry in list(self._models.values()):
            for sv in entry.versions.values():
                await sv.queue.close()


def _first_line(exc: BaseException) -> str:
    """One line for an unexpected failure (a Serve deploy error carries a whole traceback)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    return f"{type(exc).__name__}: {text}"[:500]


def require_ready(entry: ModelEntry, version: str, sv: ServedVersion) -> None:
    """Raise UnavailableError when ``sv`` cannot take requests now."""
    if not sv.ready and not sv.accepting:
        raise UnavailableError(
            f"model '{entry.name}' version {version} is not ready: {sv.reason or 'loading'}"
        )
