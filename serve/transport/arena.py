"""Shared memory between an ingress process and the replicas on its host.

Large tensors do not cross a Unix socket (a copy into the kernel and another out of it):
the ingress writes them once into its :class:`Arena`, an anonymous ``memfd`` whose size
is sealed so no one can shrink it under a reader, and the frame carries only
``["a", offset]``. Each replica receives the arena's descriptor during the handshake,
after proving itself, and maps it read-only (:class:`ArenaMap`); the batcher then copies
straight from the map into the batch buffer.

Allocation is a set of power-of-two size classes with a free list each: O(1), no
fragmentation for the steady sizes inference traffic has (one image is always the same
size), and a tensor that finds no room simply travels inline instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import threading
from dataclasses import dataclass

import numpy as np

from rayfront.errors import InternalError

#: Tensors smaller than this travel inline: the bookkeeping would cost more than the copy.
DEFAULT_MIN_BYTES = 64 * 1024
DEFAULT_ARENA_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Block:
    """One allocation: where it starts and its size class (a power of two)."""

    offset: int
    size: int


class Arena:
    """The ingress side: a sealed memfd, written through a private map, freed per request."""

    def __init__(
        self, size: int = DEFAULT_ARENA_BYTES, *, min_bytes: int = DEFAULT_MIN_BYTES
    ) -> None:
        if size < min_bytes:
            raise ValueError(f"arena size {size} is below the {min_bytes}-byte minimum block")
        self.size = size
        self.min_bytes = min_bytes
        self.fd = os.memfd_create("rayfront-arena", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        os.ftruncate(self.fd, size)
        fcntl.fcntl(
            self.fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
        )
        self._map = mmap.mmap(self.fd, size)
        self._view = np.frombuffer(self._map, dtype=np.uint8)
        self._free: dict[int, list[int]] = {}
        self._top = 0
        self._lock = threading.Lock()  # writes may come from decode threads
        self.in_use = 0

    def _class(self, nbytes: int) -> int:
        size = self.min_bytes
        while size < nbytes:
            size <<= 1
        return size

    def alloc(self, nbytes: int) -> Block | None:
        """A block of at least ``nbytes``, or None when the arena is full."""
        size = self._class(nbytes)
        with self._lock:
            free = self._free.get(size)
            if free:
                offset = free.pop()
            elif self._top + size <= self.size:
                offset = self._top
                self._top += size
            else:
                return None
            self.in_use += size
        return Block(offset, size)

    def free(self, block: Block) -> None:
        with self._lock:
            self._free.setdefault(block.size, []).append(block.offset)
            self.in_use -= block.size

    def put(self, arr: np.ndarray) -> Block | None:
        """Copy ``arr``'s bytes into a new block; None when there is no room."""
        if arr.nbytes < self.min_bytes:
            return None
        block = self.alloc(arr.nbytes)
        if block is None:
            return None
        src = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
        self._view[block.offset : block.offset + arr.nbytes] = src
        return block

    def close(self) -> None:
        self._view = np.empty(0, np.uint8)
        with contextlib.suppress(BufferError):  # a view is still alive; the map goes with it
            self._map.close()
        os.close(self.fd)


class ArenaMap:
    """The replica side: one client's arena, mapped read-only."""

    def __init__(self, fd: int) -> None:
        try:
            self.size = os.fstat(fd).st_size
            seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
            if not seals & fcntl.F_SEAL_SHRINK:
                # A shrinkable file could be truncated under our reads (SIGBUS).
                raise InternalError("transport: the peer's arena is not sealed against shrinking")
            self._map = mmap.mmap(fd, self.size, prot=mmap.PROT_READ)
        finally:
            os.close(fd)  # the map keeps the memory; the descriptor is not needed
        self._view = memoryview(self._map)

    def __call__(self, offset: int, nbytes: int) -> memoryview:
        """The bytes of one tensor (a read-only view of the map)."""
        if offset < 0 or nbytes < 0 or offset + nbytes > self.size:
            raise InternalError(
                f"transport: arena reference {offset}+{nbytes} is outside the "
                f"{self.size}-byte arena"
            )
        return self._view[offset : offset + nbytes]
