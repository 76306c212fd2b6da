"""The GPU data path of one execution instance: pinned slots, copy streams, two batches in flight.

For each batch::

    collate   requests -> pinned host slot            (copier threads, one copy per request)
    launch    pinned -> device   on the H2D stream    (asynchronous DMA)
              forward            on the compute stream, after the H2D event
              device -> pinned   on the D2H stream, after the compute event
    wait      the D2H event      (a waiter thread; the event loop never blocks)
    answer    each request's rows copied out of the pinned outputs, slot released

While batch n computes, batch n+1 is collated and its H2D copy runs on the other stream,
so the device never waits for the host. Every buffer is allocated once per slot and
reused; outputs are recorded on the D2H stream so the caching allocator cannot hand their
memory out before the copy has read it.

The launch and wait steps belong to a :class:`DeviceBackend` (CUDA through torch here;
tests use a fake one), so the pipelining itself runs, and is tested, without a GPU.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

from rayfront.batching import split
from rayfront.runtimes.instances import DEFAULT_DEPTH
from rayfront.runtimes.staging import HostAllocator, HostSlot, SlotPool, fill, slot_key, stageable
from rayfront.spec import ModelSpec
from rayfront.tensors import TensorDict

logger = logging.getLogger(__name__)


class DeviceProgram(Protocol):
    """A model that runs on device tensors: enqueues work on the current stream."""

    def forward(self, inputs: dict[str, Any]) -> dict[str, Any]: ...


class DeviceBackend(Protocol):
    """How a pipeline talks to a device (CUDA via torch, or a test double)."""

    def host_allocator(self) -> HostAllocator:
        """Allocates the slots' host buffers (pinned on a real device)."""
        ...

    def launch(self, slot: HostSlot, rows: int) -> Any:
        """Enqueue copy-in, forward and copy-out of ``rows`` rows; return a ticket."""
        ...

    def wait(self, ticket: Any) -> dict[str, np.ndarray]:
        """Block until the ticket's batch is back in host memory; its outputs (slot views)."""
        ...


class DevicePipeline:
    """One execution instance on a device; satisfies :class:`~rayfront.runtimes.instances.Instance`."""

    def __init__(
        self,
        backend: DeviceBackend,
        spec: ModelSpec,
        *,
        depth: int = DEFAULT_DEPTH,
        copier: ThreadPoolExecutor | None = None,
        name: str = "",
    ) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if spec.max_batch_size < 1:
            raise ValueError(
                f"model {spec.name!r}: the device pipeline needs max_batch_size >= 1 (batched "
                "inputs); serve this model with the runtime's own infer()"
            )
        self.backend = backend
        self.spec = spec
        self.depth = depth
        self.inflight = 0
        self._copier = copier
        # One thread enqueues device work (launches stay in order); waiters block on events;
        # stagers run each batch's collation (which fans its copies out to ``copier``: never
        # the same pool, or batches waiting on their own copies could fill it and deadlock).
        self._launcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"rf-launch-{name}")
        self._stagers = ThreadPoolExecutor(max_workers=depth, thread_name_prefix=f"rf-stage-{name}")
        self._waiters = ThreadPoolExecutor(max_workers=depth, thread_name_prefix=f"rf-wait-{name}")
        # One slot per batch in flight: waiting for a slot is what bounds the depth.
        self._slots = SlotPool(spec.max_batch_size, depth, backend.host_allocator())

    @property
    def slots(self) -> SlotPool:
        return self._slots

    async def run(self, items: list[TensorDict]) -> list[TensorDict]:
        key = slot_key(items[0])
        if not stageable(key):
            raise ValueError(f"model {self.spec.name!r}: BYTES inputs cannot go to a device")
        loop = asyncio.get_running_loop()
        self.inflight += 1
        slot = await self._slots.acquire(key)
        try:
            rows = await loop.run_in_executor(self._stagers, fill, slot, items, self._copier)
            ticket = await loop.run_in_executor(self._launcher, self.backend.launch, slot, rows)
            outputs = await loop.run_in_executor(self._waiters, self.backend.wait, ticket)
            sizes = [int(next(iter(i.values())).shape[0]) for i in items]
            # The pinned outputs belong to the slot, which the next batch reuses: copy out.
            return [
                {name: arr.copy() for name, arr in part.items()}
                for part in split(outputs, sizes, model=self.spec.name)
            ]
        finally:
            self._slots.release(slot)
            self.inflight -= 1

    def close(self) -> None:
        self._launcher.shutdown(wait=True)
        self._waiters.shutdown(wait=True)
        self._stagers.shutdown(wait=True)


class CudaBackend:
    """:class:`DeviceBackend` on a CUDA device through torch: three streams, events per slot."""

    def __init__(self, program: DeviceProgram, spec: ModelSpec, device: Any) -> None:
        import torch

        self._torch = torch
        self.program = program
        self.spec = spec
        self.device = torch.device(device)
        self.h2d = torch.cuda.Stream(device=self.device)
        self.compute = torch.cuda.Stream(device=self.device)
        self.d2h = torch.cuda.Stream(device=self.device)
        self._out_dtypes = {t.name: t.datatype for t in spec.outputs}

    def host_allocator(self) -> HostAllocator:
        torch = self._torch

        def pinned(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
            # The array's base is the pinned tensor, which stays alive with it.
            return torch.empty(shape, dtype=_torch_dtype(torch, dtype), pin_memory=True).numpy()

        return pinned

    def _device_buffers(self, slot: HostSlot) -> dict[str, Any]:
        bufs = slot.extra.get("device")
        if bufs is None:
            torch = self._torch
            bufs = {
                name: torch.empty(
                    arr.shape, dtype=_torch_dtype(torch, arr.dtype), device=self.device
                )
                for name, arr in slot.inputs.items()
            }
            slot.extra["device"] = bufs
            # The pinned tensor itself (the array's base), so torch knows the copy can be an
            # asynchronous DMA; a plain host array (tests) is wrapped as it is.
            slot.extra["pinned"] = {
                name: arr.base if isinstance(arr.base, torch.Tensor) else torch.from_numpy(arr)
                for name, arr in slot.inputs.items()
            }
        return bufs

    def launch(self, slot: HostSlot, rows: int) -> Any:
        with self._torch.cuda.device(self.device):
            return self._launch(slot, rows)

    def _launch(self, slot: HostSlot, rows: int) -> Any:
        torch = self._torch
        dev = self._device_buffers(slot)
        pinned = slot.extra["pinned"]
        copied, computed, done = (torch.cuda.Event() for _ in range(3))
        with torch.cuda.stream(self.h2d):
            for name, buf in dev.items():
                buf[:rows].copy_(pinned[name][:rows], non_blocking=True)
            copied.record(self.h2d)
        self.compute.wait_event(copied)
        with torch.cuda.stream(self.compute), torch.inference_mode():
            outputs = self.program.forward({name: buf[:rows] for name, buf in dev.items()})
            computed.record(self.compute)
        host_out = slot.extra.get("outputs")
        if host_out is None:
            host_out = slot.extra["outputs"] = {}
        self.d2h.wait_event(computed)
        with torch.cuda.stream(self.d2h):
            for name, tensor in outputs.items():
                tensor.record_stream(self.d2h)
                dst = host_out.get(name)
                if dst is None or dst.shape[1:] != tensor.shape[1:]:
                    dst = torch.empty(
                        (slot.max_rows, *tensor.shape[1:]), dtype=tensor.dtype, pin_memory=True
                    )
                    host_out[name] = dst
                dst[:rows].copy_(tensor, non_blocking=True)
            done.record(self.d2h)
        return done, rows, slot

    def wait(self, ticket: Any) -> dict[str, np.ndarray]:
        done, rows, slot = ticket
        done.synchronize()
        return {name: t[:rows].numpy() for name, t in slot.extra["outputs"].items()}


def _torch_dtype(torch: Any, dtype: np.dtype) -> Any:
    return torch.from_numpy(np.empty(0, dtype=np.dtype(dtype).newbyteorder("="))).dtype
