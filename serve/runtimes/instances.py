"""Execution instances, as Triton means them, and the pool the batcher hands batches to.

``instance_group { count: N kind: KIND_GPU gpus: [...] }`` is N execution instances on
each named GPU, fed by one batcher. An instance keeps up to ``depth`` batches in flight:

* :class:`HostInstance` (CPU runtimes): one execution thread; while it runs batch n, the
  next batch is collated into another reused slot, so the thread never waits for a copy.
* :class:`~rayfront.runtimes.device_pipeline.DevicePipeline` (GPU runtimes): pinned
  slots, an asynchronous host-to-device copy on its own stream, compute, and the answer
  copied back into pinned memory, two batches overlapping.

:class:`InstancePool` gives each batch to the instance with the fewest batches in flight;
its capacity (instances x depth) is the batcher's ``max_inflight``.
"""

from __future__ import annotations

import asyncio
import itertools
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from rayfront.batching import collate, split
from rayfront.runtimes.base import Runtime
from rayfront.runtimes.staging import HostSlot, SlotPool, fill, slot_key, stageable
from rayfront.spec import ModelSpec
from rayfront.tensors import TensorDict

#: Batches one instance keeps in flight: one running, one being collated behind it.
DEFAULT_DEPTH = 2


class Instance(Protocol):
    """One execution instance: runs a batch given as its requests' inputs."""

    depth: int
    inflight: int

    async def run(self, items: list[TensorDict]) -> list[TensorDict]: ...

    def close(self) -> None: ...


def _sizes(items: list[TensorDict]) -> list[int]:
    return [int(next(iter(item.values())).shape[0]) for item in items]


class HostInstance:
    """A runtime on the CPU behind one execution thread, fed from reused host slots."""

    def __init__(
        self,
        runtime: Runtime,
        spec: ModelSpec,
        *,
        depth: int = DEFAULT_DEPTH,
        copier: ThreadPoolExecutor | None = None,
        name: str = "",
    ) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.runtime = runtime
        self.spec = spec
        self.depth = depth
        self.inflight = 0
        self._copier = copier
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"rf-exec-{name}")
        self._stager = ThreadPoolExecutor(max_workers=depth, thread_name_prefix=f"rf-stage-{name}")
        rows = max(spec.max_batch_size, 1)
        # One slot per batch in flight (one running, one being collated behind it).
        self._slots = SlotPool(rows, depth) if spec.max_batch_size > 0 else None

    async def run(self, items: list[TensorDict]) -> list[TensorDict]:
        loop = asyncio.get_running_loop()
        self.inflight += 1
        try:
            key = slot_key(items[0])
            if self._slots is None or not stageable(key):
                inputs, sizes = collate(items)
                outputs = await loop.run_in_executor(self._thread, self.runtime.infer, inputs)
                return split(outputs, sizes, model=self.spec.name)
            slot = await self._slots.acquire(key)
            try:
                rows = await self._fill(slot, items)
                outputs = await loop.run_in_executor(
                    self._thread, self.runtime.infer, slot.view(rows)
                )
            finally:
                # The runtime returned fresh arrays (never views of the slot), so the slot
                # is free for the next batch as soon as the call is back.
                self._slots.release(slot)
            return split(outputs, _sizes(items), model=self.spec.name)
        finally:
            self.inflight -= 1

    async def _fill(self, slot: HostSlot, items: list[TensorDict]) -> int:
        nbytes = sum(arr.strides[0] for arr in slot.inputs.values()) * sum(_sizes(items))
        if self._copier is None or nbytes < 256 * 1024:
            return fill(slot, items)
        # The collation itself runs on a stager thread and fans its copies out to the
        # shared copier pool (running it on that pool could deadlock it).
        return await asyncio.get_running_loop().run_in_executor(
            self._stager, fill, slot, items, self._copier
        )

    def close(self) -> None:
        self._thread.shutdown(wait=True)
        self._stager.shutdown(wait=True)


class InstancePool:
    """Every execution instance of one loaded model version; batches go to the least busy."""

    def __init__(self, instances: list[Instance]) -> None:
        if not instances:
            raise ValueError("an instance pool needs at least one instance")
        self.instances = instances
        self._turn = itertools.count()

    @property
    def capacity(self) -> int:
        """Batches that may be in flight at once: the batcher's ``max_inflight``."""
        return sum(i.depth for i in self.instances)

    @property
    def inflight(self) -> int:
        return sum(i.inflight for i in self.instances)

    def _pick(self) -> Instance:
        n = len(self.instances)
        if n == 1:
            return self.instances[0]
        start = next(self._turn) % n
        ordered = self.instances[start:] + self.instances[:start]
        return min(ordered, key=lambda i: i.inflight)

    async def run(self, items: list[TensorDict]) -> list[TensorDict]:
        return await self._pick().run(items)

    def close(self) -> None:
        for instance in self.instances:
            instance.close()
