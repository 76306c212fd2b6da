"""Large tensors through the shared-memory arena, files read in place, and CANCEL."""

from __future__ import annotations

import asyncio
import fcntl
import mmap
import os
from collections.abc import Awaitable
from typing import Any

import numpy as np
import pytest

from rayfront.errors import InternalError, InvalidArgumentError
from rayfront.tensors import FileTensor
from rayfront.transport.arena import Arena, ArenaMap
from rayfront.transport.client import TransportClient
from rayfront.transport.server import TransportServer


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=20))  # type: ignore[arg-type]


@pytest.fixture
def sock_path() -> str:
    path = f"/tmp/rf-arena-{os.getpid()}-{os.urandom(3).hex()}.sock"
    yield path
    if os.path.exists(path):
        os.unlink(path)


def test_arena_reuses_blocks_of_a_size_class_when_freed():
    arena = Arena(1 << 20, min_bytes=64 * 1024)
    a = arena.alloc(100_000)
    b = arena.alloc(100_000)
    assert a is not None and b is not None and a.offset != b.offset
    assert a.size == 128 * 1024
    arena.free(a)
    again = arena.alloc(120_000)
    assert again is not None and again.offset == a.offset
    arena.close()


def test_arena_returns_none_when_full_so_the_tensor_goes_inline():
    arena = Arena(256 * 1024, min_bytes=64 * 1024)
    blocks = [arena.alloc(64 * 1024) for _ in range(4)]
    assert all(blocks)
    assert arena.alloc(64 * 1024) is None
    assert arena.put(np.zeros(20_000, np.float32)) is None
    arena.close()


def test_arena_map_reads_what_the_arena_wrote_when_shared():
    arena = Arena(1 << 20)
    data = np.arange(50_000, dtype=np.float32)
    block = arena.put(data)
    assert block is not None
    view = ArenaMap(os.dup(arena.fd))
    got = np.frombuffer(view(block.offset, data.nbytes), dtype=np.float32)
    np.testing.assert_array_equal(got, data)
    with pytest.raises(InternalError, match="outside the"):
        view(arena.size - 10, 100)
    arena.close()


def test_arena_map_refuses_a_file_that_could_shrink_under_it():
    fd = os.memfd_create("unsealed")
    os.ftruncate(fd, 4096)
    with pytest.raises(InternalError, match="not sealed against shrinking"):
        ArenaMap(fd)


def test_arena_cannot_be_truncated_by_anyone_when_sealed():
    arena = Arena(1 << 20)
    with pytest.raises(PermissionError):
        os.ftruncate(arena.fd, 10)
    seals = fcntl.fcntl(arena.fd, fcntl.F_GET_SEALS)
    assert seals & fcntl.F_SEAL_SHRINK
    arena.close()


def test_big_tensor_crosses_the_arena_and_small_one_the_socket_when_on_one_host(sock_path):
    seen: dict[str, bool] = {}

    async def handler(tensors: dict[str, np.ndarray], meta: object) -> dict[str, np.ndarray]:
        for name, arr in tensors.items():
            # Arena tensors are views of the shared map; inline ones are views of the frame.
            root: Any = arr
            while isinstance(root, np.ndarray) and root.base is not None:
                root = root.base
            seen[name] = isinstance(root, memoryview) and isinstance(root.obj, mmap.mmap)
        return {"sum": np.array([tensors["big"].sum(), tensors["small"].sum()], np.float64)}

    async def scenario() -> tuple[np.ndarray, int]:
        arena = Arena(8 << 20)
        server = TransportServer(handler)
        client = TransportClient(await server.start(uds_path=sock_path), arena=arena)
        big = np.ones((3, 224, 224), np.float32)
        out = await client.call({"big": big, "small": np.ones(4, np.float32)})
        in_use = arena.in_use
        await client.close()
        await server.close()
        arena.close()
        return out["sum"], in_use

    sums, in_use = run(scenario())
    np.testing.assert_array_equal(sums, [3 * 224 * 224, 4])
    assert seen == {"big": True, "small": False}
    assert in_use == 0  # the block is freed once the answer is back


def test_file_tensor_is_read_by_the_replica_in_place_when_sent_as_reference(sock_path):
    path = f"/dev/shm/rf-test-{os.getpid()}-{os.urandom(3).hex()}"
    data = np.arange(1000, dtype=np.float32)
    with open(path, "wb") as f:
        f.write(b"\0" * 64 + data.tobytes())
    st = os.stat(path)

    async def handler(tensors: dict[str, Any], meta: object) -> dict[str, np.ndarray]:
        x = tensors["x"]
        assert isinstance(x, FileTensor)
        return {"y": x.numpy() * 2}

    async def scenario() -> np.ndarray:
        server = TransportServer(handler)
        client = TransportClient(await server.start(uds_path=sock_path))
        fd = os.open(path, os.O_RDONLY)
        tensor = FileTensor(
            fd, 64, np.dtype("<f4"), (1000,), path=path, dev=st.st_dev, ino=st.st_ino
        )
        os.close(fd)
        try:
            return (await client.call({"x": tensor}))["y"]
        finally:
            await client.close()
            await server.close()

    try:
        out = run(scenario())
    finally:
        os.unlink(path)
    np.testing.assert_array_equal(out, data * 2)


def test_file_reference_is_refused_when_the_file_was_replaced(sock_path):
    path = f"/dev/shm/rf-test-{os.getpid()}-{os.urandom(3).hex()}"
    with open(path, "wb") as f:
        f.write(b"\0" * 4000)
    st = os.stat(path)

    async def handler(tensors: dict[str, Any], meta: object) -> dict[str, np.ndarray]:
        return {"y": np.zeros(1, np.float32)}

    async def scenario() -> None:
        server = TransportServer(handler)
        client = TransportClient(await server.start(uds_path=sock_path))
        fd = os.open(path, os.O_RDONLY)
        stale = FileTensor(
            fd, 0, np.dtype("<f4"), (10,), path=path, dev=st.st_dev, ino=st.st_ino + 1
        )
        os.close(fd)
        try:
            with pytest.raises(InvalidArgumentError, match="was replaced since it was registered"):
                await client.call({"x": stale})
        finally:
            await client.close()
            await server.close()

    try:
        run(scenario())
    finally:
        os.unlink(path)


def test_file_tensor_reports_a_clean_error_when_the_region_shrank():
    path = f"/dev/shm/rf-test-{os.getpid()}-{os.urandom(3).hex()}"
    with open(path, "wb") as f:
        f.write(b"\0" * 4000)
    fd = os.open(path, os.O_RDWR)
    tensor = FileTensor(fd, 0, np.dtype("<f4"), (1000,), path=path)
    os.ftruncate(fd, 100)  # the owner truncates mid-flight: pread, not SIGBUS
    os.close(fd)
    try:
        with pytest.raises(InvalidArgumentError, match="the region shrank or was removed"):
            tensor.numpy()
    finally:
        os.unlink(path)


def test_cancel_reaches_the_replica_when_the_caller_gives_up(sock_path):
    cancelled = asyncio.Event()

    async def handler(tensors: dict[str, np.ndarray], meta: object) -> dict[str, np.ndarray]:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {}

    async def scenario() -> bool:
        server = TransportServer(handler)
        client = TransportClient(await server.start(uds_path=sock_path))
        call = asyncio.create_task(client.call({"x": np.ones(1, np.float32)}))
        while server.inflight < 1:
            await asyncio.sleep(0.005)
        call.cancel()
        try:
            await asyncio.wait_for(cancelled.wait(), 5)
        finally:
            await client.close()
            await server.close()
        return cancelled.is_set()

    assert run(scenario())
