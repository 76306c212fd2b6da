"""Runtime-level target: rayfront's engine in-process, no Ray, no transport, no HTTP.

Concurrent closed-loop callers ``submit`` straight into a
:class:`~rayfront.engine.VersionEngine`: the same execution instances, batch slots and
dynamic batcher a ModelVersion replica runs. The gap between this and ``raw`` is the
engine's cost (batching, collation, copies); the gap between this and ``rayfront-http``
is the ingress and the transport. Never imports Ray.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from rayfront.benchmarks.load.closed_loop import CallError, LoopResult, Tick, closed_loop, run_async
from rayfront.benchmarks.targets.target import Workload
from rayfront.errors import FailedPreconditionError, RayfrontError

logger = logging.getLogger(__name__)


class InProcessBatcher:
    """A model version's engine (instances + batcher, per the config) in this process."""

    def __init__(self, repository: Path, model: str, max_inflight: int = 2) -> None:
        try:
            from rayfront.engine import EngineSettings, VersionEngine
            from rayfront.repository.layout import Repository
        except ImportError as err:
            raise FailedPreconditionError(
                f"failed to start: rayfront's engine is not importable ({err})"
            ) from None
        repo = Repository(repository)
        self.spec = repo.spec(model)
        version = max(repo.versions(model))
        self.engine: Any = VersionEngine.load(
            self.spec,
            repo.version_dir(model, version),
            str(version),
            settings=EngineSettings(depth=max_inflight),
        )

    def close(self) -> None:
        asyncio.run(self.engine.close())

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
            engine = self.engine
            # The batcher belongs to the loop it first runs on: each point gets its own.
            engine.queue = engine.make_queue()
            if not engine.ready:
                await engine.warm_up()

            async def call() -> None:
                try:
                    out = await engine.submit(work.inputs)
                except RayfrontError as err:
                    raise CallError(f"{type(err).__name__}: {err.message}") from None
                arr = out.get(work.output)
                if arr is None or arr.shape[:1] != (work.rows,):
                    raise CallError(f"engine returned {sorted(out)} without {work.rows} rows")

            try:
                return await closed_loop([call] * concurrency, duration_s, warmup_s, on_tick)
            finally:
                await engine.queue.close()

        return run_async(run())
