"""Where a batch executes: a Ray Serve handle to a ModelVersion replica, or in-process.

The data plane only needs ``execute(batch) -> outputs`` plus how many batches may be in
flight. The Ray backend is what ``rayfront serve`` uses; the local backend runs a Runtime
in this process and exists for unit tests and for Ray-free benchmarks of the batcher.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from rayfront.errors import InternalError, RayfrontError, UnavailableError
from rayfront.runtimes.base import Runtime, TensorDict


class VersionBackend(Protocol):
    """Executes batches for one model version."""

    async def execute(self, batch: TensorDict) -> TensorDict: ...

    def capacity(self) -> int:
        """Batches that may be in flight at once right now."""
        ...


class LocalBackend:
    """Runs a Runtime in this process on a single worker thread."""

    def __init__(self, runtime: Runtime, *, inflight: int = 1) -> None:
        self.runtime = runtime
        self._inflight = inflight
        self._executor = ThreadPoolExecutor(max_workers=1)

    async def execute(self, batch: TensorDict) -> TensorDict:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.runtime.infer, batch)

    def capacity(self) -> int:
        return self._inflight

    def close(self) -> None:
        self._executor.shutdown(wait=False)
        self.runtime.close()


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
