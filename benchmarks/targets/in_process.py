"""Runtime-level target: rayfront's runtime + dynamic batcher in-process, no Ray, no transport.

Concurrent closed-loop callers ``submit`` straight into :func:`rayfront.batching.make_executor`
around :func:`rayfront.runtimes.load_runtime`, with one execution thread as the
``ModelVersion`` deployment has. The gap between this and ``raw`` is the batcher's cost;
the gap between this and ``rayfront-http`` is transport plus Ray hops. Never imports Ray.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rayfront.benchmarks.load.closed_loop import CallError, LoopResult, Tick, closed_loop, run_async
from rayfront.benchmarks.targets.target import Workload
from rayfront.errors import FailedPreconditionError, RayfrontError

logger = logging.getLogger(__name__)


class InProcessBatcher:
    """A loaded runtime behind rayfront's executor (batcher or direct, per the config)."""

    def __init__(self, repository: Path, model: str, max_inflight: int = 2) -> None:
        try:
            from rayfront.batching import make_executor
            from rayfront.repository.layout import Repository
            from rayfront.runtimes import load_runtime
        except ImportError as err:
            raise FailedPreconditionError(
                f"failed to start: rayfront's runtime/batcher is not importable ({err})"
            ) from None
        repo = Repository(repository)
        self.spec = repo.spec(model)
        version = max(repo.versions(model))
        self.runtime: Any = load_runtime(self.spec, repo.version_dir(model, version))
        self._make_executor = make_executor
        self._max_inflight = max_inflight
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"bench-{model}")

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.runtime.close()

    def measure(
        self,
        work: Workload,
        concurrency: int,
        duration_s: float,
        warmup_s: float,
        on_tick: Tick | None = None,
    ) -> LoopResult:
        """One closed-loop point of ``concurrency`` callers submitting ``work.inputs``."""

        async def run() -> LoopResult:
            loop = asyncio.get_running_loop()

            async def execute(inputs: dict[str, Any]) -> dict[str, Any]:
                return await loop.run_in_executor(self._pool, self.runtime.infer, inputs)

            # A fresh executor per point: it binds to the running loop on first submit.
            executor = self._make_executor(
                self.spec, execute, version="1", max_inflight=self._max_inflight
            )

            async def call() -> None:
                try:
                    out = await executor.submit(work.inputs)
                except RayfrontError as err:
                    raise CallError(f"{type(err).__name__}: {err.message}") from None
                arr = out.get(work.output)
                if arr is None or arr.shape[:1] != (work.rows,):
                    raise CallError(f"batcher returned {sorted(out)} without {work.rows} rows")

            try:
                return await closed_loop([call] * concurrency, duration_s, warmup_s, on_tick)
            finally:
                await executor.close()

        return run_async(run())
