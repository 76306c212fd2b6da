"""The set of served models and versions, and how they get loaded.

A :class:`ModelLoader` turns a repository model into :class:`ServedVersion` objects
(each a backend plus its batcher). The Ray loader deploys one Serve application per
version; the local loader runs runtimes in-process (unit tests, Ray-free tools).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from rayfront.backends import LocalBackend, VersionBackend
from rayfront.batching import DirectExecutor, DynamicBatcher, make_executor
from rayfront.errors import NotFoundError
from rayfront.metrics import InferenceRecorder
from rayfront.repository.layout import Repository
from rayfront.runtimes import load_runtime
from rayfront.spec import ModelSpec

logger = logging.getLogger(__name__)

Scheduler = DynamicBatcher | DirectExecutor


@dataclass
class ServedVersion:
    """One live version: where it runs and the queue in front of it."""

    version: str
    backend: VersionBackend
    scheduler: Scheduler
    ready: bool = True
    reason: str = ""


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


def make_scheduler(
    spec: ModelSpec, version: str, backend: VersionBackend, recorder: InferenceRecorder | None
) -> Scheduler:
    """A dynamic batcher when config.pbtxt asks for one, else one-request-per-execution."""
    return make_executor(
        spec, backend.execute, version=version, max_inflight=backend.capacity(), metrics=recorder
    )


class ModelLoader(Protocol):
    """Loads and unloads the versions of a model into backends."""

    async def load(self, name: str) -> ModelEntry: ...

    async def unload(self, entry: ModelEntry) -> None: ...

    def repository(self) -> Repository: ...


class LocalModelLoader:
    """Loads every served version in-process with :class:`LocalBackend` (no Ray)."""

    def __init__(self, root: Path, recorder: InferenceRecorder | None = None) -> None:
        self._repo = Repository(root)
        self._recorder = recorder

    def repository(self) -> Repository:
        return self._repo

    async def load(self, name: str) -> ModelEntry:
        if name not in self._repo.models():
            raise NotFoundError(f"model '{name}' is not in the repository {self._repo.root}")
        spec = self._repo.spec(name)
        entry = ModelEntry(name=name, spec=spec)
        for v in self._repo.served_versions(name):
            runtime = load_runtime(spec, self._repo.version_dir(name, v))
            backend = LocalBackend(runtime)
            entry.versions[str(v)] = ServedVersion(
                version=str(v),
                backend=backend,
                scheduler=make_scheduler(spec, str(v), backend, self._recorder),
            )
        logger.info("loaded model %r versions %s in-process", name, entry.sorted_versions())
        return entry

    async def unload(self, entry: ModelEntry) -> None:
        for sv in entry.versions.values():
            await sv.scheduler.close()
            if isinstance(sv.backend, LocalBackend):
                sv.backend.close()
