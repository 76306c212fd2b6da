"""The in-flight limit follows replica counts at run time (autoscaling up and down)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from rayfront.batching import DirectExecutor, DynamicBatcher
from rayfront.spec import DynamicBatching, ModelSpec, TensorSpec


def _spec(batching: bool) -> ModelSpec:
    return ModelSpec(
        name="m",
        platform="onnxruntime_onnx",
        max_batch_size=8,
        inputs=(TensorSpec(name="x", datatype="FP32", dims=(2,)),),
        outputs=(TensorSpec(name="y", datatype="FP32", dims=(2,)),),
        dynamic_batching=DynamicBatching() if batching else None,
    )


async def _peak_concurrency(
    executor: DirectExecutor | DynamicBatcher, gate: asyncio.Event, n: int
) -> int:
    tasks = [
        asyncio.create_task(executor.submit({"x": np.full((1, 2), i, np.float32)}))
        for i in range(n)
    ]
    await asyncio.sleep(0.05)
    peak = executor.running  # type: ignore[attr-defined]
    gate.set()
    results = await asyncio.gather(*tasks)
    for i, out in enumerate(results):
        assert out["y"][0, 0] == i
    return peak


def _make(cls: type, batching: bool, limit: int) -> tuple[object, asyncio.Event]:
    gate = asyncio.Event()
    running = 0

    async def execute(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        nonlocal running
        running += 1
        executor.running = max(executor.running, running)  # type: ignore[attr-defined]
        await gate.wait()
        running -= 1
        return {"y": batch["x"]}

    executor = cls(_spec(batching), execute, max_inflight=limit)
    executor.running = 0  # type: ignore[attr-defined]
    return executor, gate


@pytest.mark.parametrize("limit,new_limit", [(1, 3), (3, 1)])
def test_direct_executor_max_inflight_follows_resize_when_changed(
    limit: int, new_limit: int
) -> None:
    async def scenario() -> int:
        executor, gate = _make(DirectExecutor, False, limit)
        executor.max_inflight = new_limit  # type: ignore[attr-defined]
        return await _peak_concurrency(executor, gate, 6)  # type: ignore[arg-type]

    assert asyncio.run(scenario()) == new_limit


def test_direct_executor_shrink_then_grow_pays_back_debt_when_busy() -> None:
    async def scenario() -> int:
        executor, gate = _make(DirectExecutor, False, 4)
        executor.max_inflight = 1  # type: ignore[attr-defined]
        executor.max_inflight = 2  # type: ignore[attr-defined]
        return await _peak_concurrency(executor, gate, 6)  # type: ignore[arg-type]

    assert asyncio.run(scenario()) == 2


def test_dynamic_batcher_max_inflight_rejects_zero_when_set() -> None:
    async def execute(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return batch

    batcher = DynamicBatcher(_spec(True), execute, max_inflight=2)
    with pytest.raises(ValueError, match="max_inflight must be >= 1"):
        batcher.max_inflight = 0
    batcher.max_inflight = 5
    assert batcher.max_inflight == 5
