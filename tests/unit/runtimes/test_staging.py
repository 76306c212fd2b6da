"""Batch slots: requests collated straight into reused buffers, bounded, parallel for big ones."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from rayfront.runtimes.staging import SlotPool, fill, slot_key, stageable
from rayfront.tensors import FileTensor


def _req(value: float, rows: int = 1, width: int = 3) -> dict[str, np.ndarray]:
    return {"x": np.full((rows, width), value, np.float32), "i": np.full((rows,), value, np.int64)}


def test_fill_puts_each_request_in_its_own_rows_when_collated():
    async def scenario() -> np.ndarray:
        pool = SlotPool(max_rows=8, count=1)
        items = [_req(1.0), _req(2.0, rows=3), _req(3.0, rows=2)]
        slot = await pool.acquire(slot_key(items[0]))
        rows = fill(slot, items)
        assert rows == 6
        np.testing.assert_array_equal(slot.inputs["i"][:6], [1, 2, 2, 2, 3, 3])
        return slot.view(rows)["x"]

    x = asyncio.run(scenario())
    assert x.shape == (6, 3)
    np.testing.assert_array_equal(x[:, 0], [1, 2, 2, 2, 3, 3])


def test_fill_gives_the_same_batch_when_copied_by_several_threads():
    items = [_req(float(i), width=300_000) for i in range(16)]  # ~19 MB: above the threshold

    async def scenario() -> tuple[np.ndarray, np.ndarray]:
        pool = SlotPool(max_rows=16, count=2)
        key = slot_key(items[0])
        serial, parallel = await pool.acquire(key), await pool.acquire(key)
        fill(serial, items)
        with ThreadPoolExecutor(4) as threads:
            fill(parallel, items, threads)
        return serial.inputs["x"].copy(), parallel.inputs["x"].copy()

    serial, parallel = asyncio.run(scenario())
    np.testing.assert_array_equal(serial, parallel)
    np.testing.assert_array_equal(parallel[:, 0], np.arange(16, dtype=np.float32))


def test_fill_reads_a_file_tensor_straight_into_the_slot_when_given_one():
    path = f"/tmp/rf-stage-{os.getpid()}"
    data = np.arange(12, dtype=np.float32).reshape(2, 6)
    data.tofile(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        tensor = FileTensor(fd, 0, np.dtype("<f4"), (2, 6), path=path)

        async def scenario() -> np.ndarray:
            pool = SlotPool(max_rows=4, count=1)
            slot = await pool.acquire(slot_key({"x": tensor}))
            rows = fill(slot, [{"x": tensor}])
            return slot.view(rows)["x"].copy()

        np.testing.assert_array_equal(asyncio.run(scenario()), data)
    finally:
        os.close(fd)
        os.unlink(path)


def test_fill_refuses_a_batch_bigger_than_the_slot():
    async def scenario() -> None:
        pool = SlotPool(max_rows=2, count=1)
        slot = await pool.acquire(slot_key(_req(0.0)))
        with pytest.raises(ValueError, match="does not fit a 2-row slot"):
            fill(slot, [_req(1.0, rows=3)])

    asyncio.run(scenario())


def test_slot_pool_waits_for_a_free_slot_when_all_are_in_use():
    async def scenario() -> list[str]:
        pool = SlotPool(max_rows=4, count=2)
        key = slot_key(_req(0.0))
        a, b = await pool.acquire(key), await pool.acquire(key)
        order: list[str] = []

        async def third() -> None:
            slot = await pool.acquire(key)
            order.append("third got a slot")
            pool.release(slot)

        task = asyncio.create_task(third())
        await asyncio.sleep(0.01)
        order.append("still waiting")
        pool.release(a)
        await task
        pool.release(b)
        assert pool.allocations == 2  # reused, never a third buffer
        return order

    assert asyncio.run(scenario()) == ["still waiting", "third got a slot"]


def test_slot_pool_gives_an_idle_slot_to_another_shape_when_the_pool_is_full():
    async def scenario() -> tuple[int, tuple[int, ...]]:
        pool = SlotPool(max_rows=4, count=1)
        slot = await pool.acquire(slot_key(_req(0.0, width=3)))
        pool.release(slot)
        other = await pool.acquire(slot_key(_req(0.0, width=5)))
        return pool.allocations, other.inputs["x"].shape

    assert asyncio.run(scenario()) == (2, (4, 5))


def test_stageable_is_false_for_bytes_tensors_when_keyed():
    assert stageable(slot_key(_req(0.0)))
    assert not stageable(slot_key({"t": np.array([b"a"], dtype=object)}))
