"""The ModelVersion Ray Serve deployment: one loaded runtime, one batch per call.

The Gateway forms batches and sends each as a single handle call, so this replica only
executes. A one-thread executor serialises executions: a second in-flight batch is
deserialised while the first runs (pipelining) instead of fighting it for the cores.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rayfront.repository.layout import Repository
from rayfront.runtimes import load_runtime
from rayfront.runtimes.base import Runtime, TensorDict

logger = logging.getLogger(__name__)


class ModelVersion:
    """Serve deployment body for one (model, version). Wrapped by ``serve.deployment`` in app.py."""

    def __init__(self, repository: str, model: str, version: int) -> None:
        repo = Repository(Path(repository))
        self.model = model
        self.version = str(version)
        self.spec = repo.spec(model)
        started = time.perf_counter()
        self.runtime: Runtime = load_runtime(self.spec, repo.version_dir(model, version))
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{model}-v{version}")
        logger.info(
            "loaded model %r version %s in %.2fs: %s",
            model,
            version,
            time.perf_counter() - started,
            self.runtime.describe(),
        )

    async def infer(self, inputs: TensorDict) -> TensorDict:
        """Run one batch (full tensors, batch dim included) and return every output."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.runtime.infer, inputs)

    def describe(self) -> dict[str, str]:
        return {"model": self.model, "version": self.version, **self.runtime.describe()}

    def __del__(self) -> None:
        executor = getattr(self, "_executor", None)
        if executor is not None:
            executor.shutdown(wait=True)
        runtime = getattr(self, "runtime", None)
        if runtime is not None:
            runtime.close()
