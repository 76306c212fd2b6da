"""The in-process transport: a runtime in this process on one worker thread.

For unit tests and Ray-free benchmarks of the batcher; serving uses the replica pool.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from rayfront.runtimes.base import Runtime
from rayfront.tensors import TensorDict


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
