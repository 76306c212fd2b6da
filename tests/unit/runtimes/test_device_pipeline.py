"""The GPU pipeline's slot and in-flight logic, with a fake device (no GPU needed).

The fake device reads a slot's host buffer only when its "DMA" runs, after ``launch`` has
returned, as a real asynchronous copy does: if the pipeline ever refilled a slot whose
batch was still in flight, the answers would come out wrong.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from rayfront.runtimes.device_pipeline import DevicePipeline
from rayfront.runtimes.staging import HostSlot, plain_host
from rayfront.spec import DynamicBatching, ModelSpec, TensorSpec

SPEC = ModelSpec(
    name="toy",
    platform="pytorch_libtorch",
    max_batch_size=16,
    inputs=(TensorSpec(name="x", datatype="FP32", dims=(4,)),),
    outputs=(TensorSpec(name="y", datatype="FP32", dims=(4,)),),
    dynamic_batching=DynamicBatching(),
)


class FakeDevice:
    """A device whose work runs later, on its own thread, like a CUDA stream."""

    def __init__(self, delay_s: float = 0.02) -> None:
        self.delay_s = delay_s
        self.lock = threading.Lock()
        self.running = 0
        self.max_running = 0
        self.launches = 0
        self.allocated = 0
        self.slots_seen: set[int] = set()

    def host_allocator(self) -> Any:
        def alloc(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
            self.allocated += 1
            return plain_host(shape, dtype)

        return alloc

    def launch(self, slot: HostSlot, rows: int) -> Any:
        done = threading.Event()
        out: dict[str, np.ndarray] = {}
        self.launches += 1
        self.slots_seen.add(id(slot))

        def work() -> None:
            with self.lock:
                self.running += 1
                self.max_running = max(self.max_running, self.running)
            time.sleep(self.delay_s)  # the copy happens now, long after launch returned
            out["y"] = slot.inputs["x"][:rows] * 2 + 1
            with self.lock:
                self.running -= 1
            done.set()

        threading.Thread(target=work, daemon=True).start()
        return done, out

    def wait(self, ticket: Any) -> dict[str, np.ndarray]:
        done, out = ticket
        done.wait()
        return out


def _request(i: int, rows: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.full((rows, 4), float(i), np.float32)}


def test_pipeline_answers_every_request_correctly_when_batches_overlap():
    device = FakeDevice()
    pipeline = DevicePipeline(device, SPEC, depth=2, copier=ThreadPoolExecutor(2))

    async def scenario() -> list[list[dict[str, np.ndarray]]]:
        batches = [[_request(10 * b + k, rows=1 + k % 2) for k in range(4)] for b in range(12)]
        results = await asyncio.gather(*(pipeline.run(batch) for batch in batches))
        for batch, outs in zip(batches, results, strict=True):
            for req, out in zip(batch, outs, strict=True):
                np.testing.assert_array_equal(out["y"], req["x"] * 2 + 1)
        return results

    asyncio.run(scenario())
    pipeline.close()
    assert device.launches == 12


def test_pipeline_keeps_depth_batches_in_flight_and_never_more_when_loaded():
    device = FakeDevice(delay_s=0.05)
    pipeline = DevicePipeline(device, SPEC, depth=2)

    async def scenario() -> None:
        await asyncio.gather(*(pipeline.run([_request(i)]) for i in range(10)))

    asyncio.run(scenario())
    pipeline.close()
    assert device.max_running == 2  # two batches overlap on the device
    # Slots are reused: one per batch in flight, never one per batch.
    assert len(device.slots_seen) == 2
    assert pipeline.slots.allocations == 2


def test_pipeline_copies_answers_out_of_the_slot_when_the_slot_is_reused():
    device = FakeDevice(delay_s=0.001)
    pipeline = DevicePipeline(device, SPEC, depth=1)

    async def scenario() -> tuple[np.ndarray, np.ndarray]:
        first = (await pipeline.run([_request(1)]))[0]["y"]
        second = (await pipeline.run([_request(5)]))[0]["y"]
        return first, second

    first, second = asyncio.run(scenario())
    pipeline.close()
    np.testing.assert_array_equal(first, np.full((1, 4), 3.0))  # not overwritten by batch 2
    np.testing.assert_array_equal(second, np.full((1, 4), 11.0))


def test_pipeline_refuses_a_model_without_batching_when_built():
    spec = SPEC.model_copy(update={"max_batch_size": 0, "dynamic_batching": None})
    with pytest.raises(ValueError, match="needs max_batch_size >= 1"):
        DevicePipeline(FakeDevice(), spec)


# --- the real thing, on a CUDA GPU ----------------------------------------------------------


def _conv_model(path: Any) -> Any:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 5),
    ).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    traced = torch.jit.trace(net, torch.zeros(2, 3, 16, 16))
    traced.save(str(path))
    return net


def _conv_spec(precision: str) -> ModelSpec:
    from rayfront.spec import InstanceGroup

    return ModelSpec(
        name="conv",
        platform="pytorch_libtorch",
        max_batch_size=32,
        inputs=(TensorSpec(name="x", datatype="FP32", dims=(3, 16, 16)),),
        outputs=(TensorSpec(name="y", datatype="FP32", dims=(5,)),),
        dynamic_batching=DynamicBatching(preferred_batch_size=(8, 32)),
        instance_groups=(InstanceGroup(kind="KIND_GPU", count=2),),
        parameters={"rayfront.precision": precision},
    )


@pytest.mark.gpu
@pytest.mark.parametrize(("precision", "tol"), [("fp32", 1e-4), ("fp16", 2e-2)])
def test_engine_on_gpu_answers_like_torch_on_cpu_when_batches_pipeline(tmp_path, precision, tol):
    """Pinned slots, copy streams, two instances: every request gets its own right answer."""
    import torch

    from rayfront.engine import VersionEngine

    net = _conv_model(tmp_path / "conv" / "1" / "model.pt")
    engine = VersionEngine.load(_conv_spec(precision), tmp_path / "conv" / "1", "1")
    assert len(engine.pool.instances) == 2
    assert all(isinstance(i, DevicePipeline) for i in engine.pool.instances)
    images = np.random.default_rng(1).standard_normal((96, 1, 3, 16, 16)).astype(np.float32)

    async def scenario() -> list[dict[str, np.ndarray]]:
        await engine.warm_up()
        outs = await asyncio.gather(*(engine.submit({"x": img}) for img in images))
        await engine.close()
        return outs

    outs = asyncio.run(scenario())
    with torch.inference_mode():
        ref = net(torch.from_numpy(images.reshape(96, 3, 16, 16))).numpy()
    for i, out in enumerate(outs):
        assert out["y"].dtype == np.float32  # the config's datatype, whatever the precision
        np.testing.assert_allclose(out["y"][0], ref[i], rtol=tol, atol=tol, err_msg=f"request {i}")
