"""Shadow traffic: mirror a share of answered requests to the candidate, compare, never return.

The client only ever gets the version it was routed to. After it has its answer, the
router's shadow draw may name a candidate; a copy of the request then runs there in the
background and both answers go to the canary manager, which compares them and counts the
candidate's outcome and latency for the rollout's analysis.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING

from rayfront.errors import RayfrontError
from rayfront.metrics import InferenceRecorder
from rayfront.protocol.types import InferRequest
from rayfront.tensors import TensorDict

if TYPE_CHECKING:
    from rayfront.canary.controller import CanaryManager
    from rayfront.models import ModelEntry

logger = logging.getLogger(__name__)


class ShadowMirror:
    """Sends the mirrored copies and keeps their tasks until they finish."""

    def __init__(
        self,
        canary: CanaryManager,
        recorder: InferenceRecorder,
        rng: random.Random | None = None,
    ) -> None:
        self._canary = canary
        self._recorder = recorder
        self._rng = rng or random.Random()
        self._tasks: set[asyncio.Task[None]] = set()

    def maybe_mirror(
        self, entry: ModelEntry, served: str, request: InferRequest, outputs: TensorDict
    ) -> None:
        """Mirror ``request`` (answered by ``served``) when the policy's draw says so."""
        if request.model_version:
            return  # a pinned request asked for one version; never mirror it
        target = self._canary.router_for(entry.name).shadow_for(served, self._rng)
        if target is None or target not in entry.versions:
            return
        task = asyncio.get_running_loop().create_task(
            self._mirror(entry, served, target, request.inputs, outputs)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _mirror(
        self,
        entry: ModelEntry,
        stable: str,
        target: str,
        inputs: TensorDict,
        stable_out: TensorDict,
    ) -> None:
        started = time.perf_counter()
        candidate_out: TensorDict | None = None
        try:
            candidate_out = await entry.versions[target].queue.submit(inputs)
        except RayfrontError as exc:
            logger.warning("shadow request to %s v%s failed: %s", entry.name, target, exc.message)
        except Exception:
            logger.exception("shadow request to %s v%s failed", entry.name, target)
        elapsed = time.perf_counter() - started
        ok = candidate_out is not None
        self._canary.record_request(entry.name, target, ok, elapsed)
        self._canary.record_shadow(entry.name, target, stable_out, candidate_out)
        self._recorder.record_request(
            entry.name, target, ok=ok, duration_s=elapsed, reason="" if ok else "BACKEND"
        )

    async def drain(self) -> None:
        """Wait for the copies still running (the server is stopping)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
