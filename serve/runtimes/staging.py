"""Batch slots: reusable host buffers that requests are collated straight into.

A batch is formed by copying each request's tensor into its rows of a slot, once, from
wherever its bytes are (the HTTP body, the transport's shared-memory arena, a client's
shared-memory region read with ``pread``). On a GPU the slot is pinned memory, so the
host-to-device copy that follows is a fast asynchronous DMA; on a CPU it is plain memory
reused across batches, so collation never allocates. Large batches are copied by several
threads (numpy releases the GIL for big copies).

Slots are keyed by what must agree within a batch (:func:`rayfront.batching.group_key`):
requests with another non-batch shape get another slot, and slot memory is bounded by
the pool's size.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rayfront.tensors import FileTensor, TensorDict

#: Below this many bytes a batch is copied on the calling thread (a thread hop costs more).
PARALLEL_COPY_BYTES = 4 * 1024 * 1024

HostAllocator = Callable[[tuple[int, ...], np.dtype], np.ndarray]
#: (name, dtype string, shape without the batch dim) per input, sorted by name.
SlotKey = tuple[tuple[str, str, tuple[int, ...]], ...]


def plain_host(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Ordinary host memory (the CPU runtimes' slots)."""
    return np.empty(shape, dtype=dtype)


def slot_key(inputs: TensorDict) -> SlotKey:
    """What a slot's buffers are shaped by; equal to the batcher's group key."""
    return tuple(
        (name, np.dtype(arr.dtype).str, tuple(arr.shape[1:]))
        for name, arr in sorted(inputs.items())
    )


def stageable(key: SlotKey) -> bool:
    """Whether tensors of this key can live in a slot (BYTES are Python objects: no)."""
    return all(np.dtype(dt).kind not in "OSU" for _, dt, _ in key)


@dataclass(eq=False)
class HostSlot:
    """One batch's host buffers: ``inputs[name]`` is ``(max_rows, *dims)``.

    ``extra`` is free for the device pipeline (its device buffers, events, outputs).
    """

    key: SlotKey
    inputs: dict[str, np.ndarray]
    max_rows: int
    extra: dict[str, Any] = field(default_factory=dict)

    def view(self, rows: int) -> TensorDict:
        return {name: arr[:rows] for name, arr in self.inputs.items()}


def fill(slot: HostSlot, items: list[TensorDict], pool: ThreadPoolExecutor | None = None) -> int:
    """Copy every request's rows into ``slot``; returns the rows filled.

    Each request's tensor lands in its own rows (C-contiguous, so one ``memcpy`` or one
    ``pread`` per tensor). With ``pool`` and a big batch the requests are split across
    its threads.
    """
    offsets = list(itertools.accumulate((_rows(item) for item in items), initial=0))
    total = offsets[-1]
    if total > slot.max_rows:
        raise ValueError(f"batch of {total} rows does not fit a {slot.max_rows}-row slot")
    nbytes = sum(arr.strides[0] for arr in slot.inputs.values()) * total
    if pool is None or len(items) < 2 or nbytes < PARALLEL_COPY_BYTES:
        _copy_range(slot, items, offsets, 0, len(items))
        return total
    workers = min(len(items), pool._max_workers)
    bounds = np.linspace(0, len(items), workers + 1).astype(int)
    futures = [
        pool.submit(_copy_range, slot, items, offsets, int(lo), int(hi))
        for lo, hi in itertools.pairwise(bounds)
        if hi > lo
    ]
    for future in futures:
        future.result()
    return total


def _rows(item: TensorDict) -> int:
    return int(next(iter(item.values())).shape[0])


def _copy_range(
    slot: HostSlot, items: list[TensorDict], offsets: list[int], lo: int, hi: int
) -> None:
    for i in range(lo, hi):
        start, end = offsets[i], offsets[i + 1]
        for name, value in items[i].items():
            dst = slot.inputs[name][start:end]
            if isinstance(value, FileTensor):
                value.read_into(dst)
            else:
                np.copyto(dst, value, casting="no")


class SlotPool:
    """At most ``count`` slots of ``max_rows`` rows; a batch waits here for a free one.

    Holding ``count`` = the batches an instance keeps in flight (plus one being filled)
    bounds the memory, and waiting here is what paces collation to the device.
    """

    def __init__(self, max_rows: int, count: int, allocate: HostAllocator = plain_host) -> None:
        if max_rows < 1 or count < 1:
            raise ValueError(
                f"a slot pool needs max_rows >= 1 and count >= 1, got {max_rows}, {count}"
            )
        self.max_rows = max_rows
        self.count = count
        self._allocate = allocate
        self._free: list[HostSlot] = []
        self._made = 0
        self._waiters: list[asyncio.Future[None]] = []
        #: Slots (re)allocated so far: a steady workload allocates ``count`` and stops.
        self.allocations = 0

    @property
    def in_use(self) -> int:
        return self._made - len(self._free)

    async def acquire(self, key: SlotKey) -> HostSlot:
        while True:
            for i, slot in enumerate(self._free):
                if slot.key == key:
                    return self._free.pop(i)
            if self._made < self.count:
                self._made += 1
                return self._new(key)
            if self._free:
                # Another shape's idle slot: give its memory to this shape.
                self._free.pop(0)
                return self._new(key)
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def _new(self, key: SlotKey) -> HostSlot:
        self.allocations += 1
        arrays = {
            name: self._allocate((self.max_rows, *dims), np.dtype(dt)) for name, dt, dims in key
        }
        return HostSlot(key=key, inputs=arrays, max_rows=self.max_rows)

    def release(self, slot: HostSlot) -> None:
        self._free.append(slot)
        while self._waiters:
            waiter = self._waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                break
