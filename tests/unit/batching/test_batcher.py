"""DynamicBatcher and DirectExecutor behaviour, driven with asyncio.run (no Ray)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest

from rayfront.batching import DirectExecutor, DynamicBatcher, make_executor
from rayfront.errors import (
    DeadlineExceededError,
    InternalError,
    InvalidArgumentError,
    UnavailableError,
)
from rayfront.metrics import ModelMetrics
from rayfront.spec import DynamicBatching, ModelSpec, QueuePolicy, TensorSpec
from rayfront.stats import StatsAggregator

TensorDict = dict[str, np.ndarray]


def make_spec(
    *,
    max_batch: int = 16,
    preferred: tuple[int, ...] = (),
    delay_us: int = 0,
    timeout_us: int = 0,
    max_queue: int = 0,
    priority_levels: int = 0,
    preserve_ordering: bool = False,
    dims: tuple[int, ...] = (3,),
    batching: bool = True,
) -> ModelSpec:
    db = DynamicBatching(
        preferred_batch_size=preferred,
        max_queue_delay_microseconds=delay_us,
        priority_levels=priority_levels,
        preserve_ordering=preserve_ordering,
        default_queue_policy=QueuePolicy(
            default_timeout_microseconds=timeout_us, max_queue_size=max_queue
        ),
    )
    return ModelSpec(
        name="toy",
        platform="onnxruntime_onnx",
        max_batch_size=max_batch,
        inputs=(TensorSpec(name="x", datatype="FP32", dims=dims),),
        outputs=(TensorSpec(name="y", datatype="FP32", dims=dims),),
        dynamic_batching=db if batching else None,
    )


class FakeModel:
    """execute(): y = 2x + 1, recording each batch; optionally held at a gate."""

    def __init__(
        self,
        fn: Callable[[TensorDict], TensorDict] | None = None,
        *,
        gated: bool = False,
    ) -> None:
        self.fn = fn or (lambda b: {"y": b["x"] * 2 + 1})
        self.batches: list[TensorDict] = []
        self.gate = asyncio.Event() if gated else None
        self.running = 0
        self.max_running = 0

    @property
    def rows(self) -> list[int]:
        return [int(b["x"].shape[0]) for b in self.batches]

    async def __call__(self, batch: TensorDict) -> TensorDict:
        self.batches.append(batch)
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            if self.gate is not None:
                await self.gate.wait()
            await asyncio.sleep(0)
            return self.fn(batch)
        finally:
            self.running -= 1


async def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.001)


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


def x_of(value: float, rows: int = 1, width: int = 3) -> TensorDict:
    return {"x": np.full((rows, width), value, dtype=np.float32)}


# --- correctness under concurrency -----------------------------------------------------


def test_batcher_returns_each_request_its_own_answer_when_200_run_concurrently():
    rng = np.random.default_rng(0)
    requests = [
        {"x": rng.standard_normal((int(rng.integers(1, 5)), 3)).astype(np.float32)}
        for _ in range(200)
    ]

    async def main() -> FakeModel:
        model = FakeModel()
        batcher = DynamicBatcher(make_spec(max_batch=16, preferred=(4, 8), delay_us=2000), model)
        results = await asyncio.gather(*(batcher.submit(r) for r in requests))
        for req, res in zip(requests, results, strict=True):
            np.testing.assert_array_equal(res["y"], req["x"] * 2 + 1)
        await batcher.close()
        return model

    model = run(main())
    assert sum(model.rows) == sum(len(r["x"]) for r in requests)  # every row ran once
    assert len(model.batches) < 200, "requests submitted together must be batched"
    assert max(model.rows) <= 16


def test_batcher_never_mixes_shapes_in_a_batch_when_non_batch_dims_differ():
    async def main() -> FakeModel:
        model = FakeModel()
        batcher = DynamicBatcher(make_spec(max_batch=8, dims=(-1,)), model)
        requests = [x_of(float(i), rows=1 + i % 2, width=2 + i % 3) for i in range(60)]
        results = await asyncio.gather(*(batcher.submit(r) for r in requests))
        for req, res in zip(requests, results, strict=True):
            np.testing.assert_array_equal(res["y"], req["x"] * 2 + 1)
        return model

    model = run(main())
    widths = {b["x"].shape[1] for b in model.batches}
    assert widths == {2, 3, 4}
    assert sum(model.rows) == sum(1 + i % 2 for i in range(60))


def test_batcher_counts_rows_not_requests_when_requests_carry_batches():
    async def main() -> FakeModel:
        model = FakeModel(gated=True)
        batcher = DynamicBatcher(make_spec(max_batch=8), model, max_inflight=1)
        first = asyncio.ensure_future(batcher.submit(x_of(0)))
        await wait_until(lambda: model.running == 1)
        rest = [asyncio.ensure_future(batcher.submit(x_of(i, rows=3))) for i in range(1, 5)]
        await wait_until(lambda: batcher.queue_depth == 4)
        model.gate.set()
        await asyncio.gather(first, *rest)
        return model

    # 4 requests of 3 rows, max 8 rows: 3+3 then 3+3.
    assert run(main()).rows == [1, 6, 6]


# --- latency policy ----------------------------------------------------------------------


def test_batcher_dispatches_lone_request_immediately_when_queue_is_empty():
    async def main() -> list[float]:
        model = FakeModel()
        # A 2 s delay that a lone request must not pay.
        batcher = DynamicBatcher(make_spec(preferred=(8,), delay_us=2_000_000), model)
        latencies = []
        for i in range(3):  # sequential, closed-loop: nothing else could arrive
            start = time.perf_counter()
            out = await batcher.submit(x_of(i))
            latencies.append(time.perf_counter() - start)
            np.testing.assert_array_equal(out["y"], x_of(i)["x"] * 2 + 1)
        return latencies

    latencies = run(main())
    assert max(latencies) < 0.5, latencies  # well under the 2 s queue delay


def test_batcher_waits_out_the_delay_for_lone_request_when_batch_wait_is_full():
    async def main() -> tuple[FakeModel, float]:
        model = FakeModel()
        spec = make_spec(preferred=(8,), delay_us=300_000)
        spec = spec.model_copy(update={"parameters": {"rayfront.batch_wait": "full"}})
        batcher = DynamicBatcher(spec, model)
        start = time.perf_counter()
        first = asyncio.ensure_future(batcher.submit(x_of(0)))
        await asyncio.sleep(0.05)
        # Arrives inside the window that Triton's rule keeps open: same batch.
        second = await batcher.submit(x_of(1))
        await first
        np.testing.assert_array_equal(second["y"], x_of(1)["x"] * 2 + 1)
        return model, time.perf_counter() - start

    model, elapsed = run(main())
    assert model.rows == [2]
    assert elapsed >= 0.25, elapsed


def test_batcher_refuses_unknown_batch_wait_when_built():
    spec = make_spec(preferred=(8,), delay_us=1000)
    spec = spec.model_copy(update={"parameters": {"rayfront.batch_wait": "sometimes"}})
    with pytest.raises(
        Exception, match=r"'rayfront.batch_wait' is 'sometimes'; expected one of adaptive, full"
    ):
        DynamicBatcher(spec, FakeModel())


def test_batcher_waits_for_preferred_size_when_arrivals_are_fast():
    t = [0.0]

    async def main() -> tuple[FakeModel, float]:
        model = FakeModel(gated=True)
        batcher = DynamicBatcher(
            make_spec(max_batch=8, preferred=(4,), delay_us=2_000_000),
            model,
            max_inflight=1,
            clock=lambda: t[0],
        )
        first = asyncio.ensure_future(batcher.submit(x_of(0)))
        await wait_until(lambda: model.running == 1)
        futs = []
        for i in range(1, 3):  # arrivals 100 us apart: a high rate
            t[0] += 1e-4
            futs.append(asyncio.ensure_future(batcher.submit(x_of(i))))
        await wait_until(lambda: batcher.queue_depth == 2)
        model.gate.set()
        await first
        await asyncio.sleep(0.01)
        # Slot free, 2 queued, preferred 4 reachable at this rate: keep waiting.
        assert model.rows == [1]
        for i in range(3, 5):
            t[0] += 1e-4
            futs.append(asyncio.ensure_future(batcher.submit(x_of(i))))
        start = time.perf_counter()
        await asyncio.gather(*futs)
        return model, time.perf_counter() - start

    model, waited = run(main())
    assert model.rows == [1, 4]
    assert waited < 1.0  # left as soon as the preferred size formed, not after 2 s


def test_batcher_stops_waiting_early_when_burst_is_followed_by_silence():
    async def main() -> tuple[FakeModel, float]:
        model = FakeModel(gated=True)
        # 3 rows queued, 8 preferred, 0.6 s delay: the burst's rate says "wait", the
        # silence after it soon says "no more is coming" (about 0.1 s here).
        batcher = DynamicBatcher(
            make_spec(max_batch=8, preferred=(8,), delay_us=600_000), model, max_inflight=1
        )
        first = asyncio.ensure_future(batcher.submit(x_of(0)))
        await wait_until(lambda: model.running == 1)
        futs = [asyncio.ensure_future(batcher.submit(x_of(i))) for i in range(1, 4)]
        await wait_until(lambda: batcher.queue_depth == 3)
        start = time.perf_counter()
        model.gate.set()
        await asyncio.gather(first, *futs)
        return model, time.perf_counter() - start

    model, elapsed = run(main())
    assert model.rows == [1, 3]
    assert elapsed < 0.45  # gave up well before the 0.6 s delay


# --- queue policy -------------------------------------------------------------------------


def test_batcher_raises_deadline_exceeded_when_request_times_out_in_queue():
    async def main() -> FakeModel:
        model = FakeModel(gated=True)
        batcher = DynamicBatcher(make_spec(), model, max_inflight=1, version="3")
        busy = asyncio.ensure_future(batcher.submit(x_of(0)))
        await wait_until(lambda: model.running == 1)
        with pytest.raises(
            DeadlineExceededError,
            match=r"model 'toy' version 3: request timed out after \d+ us in the queue "
            r"\(timeout 20000 us\) before execution",
        ):
            await batcher.submit(x_of(1), timeout_us=20_000)
        assert batcher.queue_depth == 0
        model.gate.set()
        np.testing.assert_array_equal((await busy)["y"], x_of(0)["x"] * 2 + 1)
        return model

    assert run(main()).rows == [1]  # the expired request never ran


def test_batcher_applies_default_timeout_when_request_sets_none():
    async def main() -> None:
        model = FakeModel(gated=True)
        batcher = DynamicBatcher(make_spec(timeout_us=10_000), model, max_inflight=1)
        busy = asyncio.ensure_future(batcher.submit(x_of(0)))
        await wait_until(lambda: model.running == 1)
        with pytest.raises(DeadlineExceededError, match=r"\(timeout 10000 us\)"):
            await batcher.submit(x_of(1))
        model.gate.set()
        await busy

    run(main())


def test_batcher_raises_unavailable_when_queue_is_full():
    async def main() -> None:
        model = FakeModel(gated=True)
        batcher = DynamicBatcher(make_spec(max_queue=2), model, max_inflight=1)
        futs = [asyncio.ensure_future(batcher.submit(x_of(0)))]
        await wait_until(lambda: model.running == 1)
        futs += [asyncio.ensure_future(batcher.submit(x_of(i))) for i in (1, 2)]
        await wait_until(lambda: batcher.queue_depth == 2)
        with pytest.raises(
            UnavailableError, match=r"queue is full \(2 requests waiting, max_queue_size 2\)"
        ):
            await batcher.submit(x_of(3))
        model.gate.set()
        await asyncio.gather(*futs)

    run(main())


def test_batcher_serves_higher_priority_first_when_levels_are_configured():
    async def main() -> list[float]:
        model = FakeModel(gated=True)
        batcher = DynamicBatcher(make_spec(max_batch=1, priority_levels=3), model, max_inflight=1)
        futs = [asyncio.ensure_future(batcher.submit(x_of(0)))]
        await wait_until(lambda: model.running == 1)
        futs.append(asyncio.ensure_future(batcher.submit(x_of(30), priority=3)))
        futs.append(asyncio.ensure_future(batcher.submit(x_of(99))))  # default: lowest level
        futs.append(asyncio.ensure_future(batcher.submit(x_of(20), priority=2)))
        futs.append(asyncio.ensure_future(batcher.submit(x_of(10), priority=1)))
        futs.append(asyncio.ensure_future(batcher.submit(x_of(11), priority=1)))
        await wait_until(lambda: batcher.queue_depth == 5)
        model.gate.set()
        await asyncio.gather(*futs)
        return [float(b["x"][0, 0]) for b in model.batches]

    assert run(main()) == [0, 10, 11, 20, 30, 99]


def test_batcher_raises_invalid_argument_when_priority_out_of_range():
    async def main() -> None:
        batcher = DynamicBatcher(make_spec(priority_levels=2), FakeModel())
        with pytest.raises(InvalidArgumentError, match="priority 5 is out of range; expected 1"):
            await batcher.submit(x_of(0), priority=5)

    run(main())


def test_batcher_raises_invalid_argument_when_request_exceeds_max_batch_size():
    async def main() -> None:
        batcher = DynamicBatcher(make_spec(max_batch=4), FakeModel())
        with pytest.raises(InvalidArgumentError, match="batch size 5 exceeds max_batch_size 4"):
            await batcher.submit(x_of(0, rows=5))

    run(main())


# --- failures and cancellation ---------------------------------------------------------


def test_batcher_passes_one_failure_to_every_waiter_when_batch_fails_and_isolation_is_off():
    def boom(batch: TensorDict) -> TensorDict:
        raise InternalError("model 'toy': runtime exploded on id=31337")

    async def main() -> list[BaseException]:
        model = FakeModel(boom, gated=True)
        batcher = DynamicBatcher(make_spec(), model, max_inflight=1, isolate_failures=False)
        futs = [asyncio.ensure_future(batcher.submit(x_of(0)))]
        await wait_until(lambda: model.running == 1)
        futs += [asyncio.ensure_future(batcher.submit(x_of(i))) for i in range(1, 6)]
        await wait_until(lambda: batcher.queue_depth == 5)
        model.gate.set()
        results = await asyncio.gather(*futs, return_exceptions=True)
        assert model.rows == [1, 5]
        return results

    results = run(main())
    assert all(isinstance(r, InternalError) for r in results)
    # The first ran alone and sees its own error; the five batched ones share a failure
    # whose runtime text (quoting some request's data) stays in the log.
    assert str(results[0]) == "model 'toy': runtime exploded on id=31337"
    assert {str(r) for r in results[1:]} == {
        "model 'toy': the batch of 5 requests this one ran in failed "
        "(InternalError); the cause is in the server log"
    }


def test_batcher_fails_batch_with_internal_error_when_output_rows_mismatch():
    async def main() -> list[BaseException]:
        model = FakeModel(lambda b: {"y": b["x"][:1]}, gated=True)
        batcher = DynamicBatcher(make_spec(), model, max_inflight=1)
        futs = [asyncio.ensure_future(batcher.submit(x_of(0)))]
        await wait_until(lambda: model.running == 1)
        futs += [asyncio.ensure_future(batcher.submit(x_of(i))) for i in range(1, 4)]
        await wait_until(lambda: batcher.queue_depth == 3)
        model.gate.set()
        return await asyncio.gather(*futs, return_exceptions=True)

    results = run(main())
    assert not isinstance(results[0], BaseException)  # batch of one splits fine
    for r in results[1:]:
        assert isinstance(r, InternalError)
        assert "output 'y' has 1 rows, expected 3" in str(r)


def test_batcher_keeps_others_answers_when_queued_waiter_is_cancelled():
    async def main() -> FakeModel:
        model = FakeModel(gated=True)
        batcher = DynamicBatcher(make_spec(), model, max_inflight=1)
        first = asyncio.ensure_future(batcher.submit(x_of(0)))
        await wait_until(lambda: model.running == 1)
        gone = asyncio.ensure_future(batcher.submit(x_of(1)))
        stays = asyncio.ensure_future(batcher.submit(x_of(2)))
        await wait_until(lambda: batcher.queue_depth == 2)
        gone.cancel()
        await wait_until(lambda: batcher.queue_depth == 1)
        model.gate.set()
        np.testing.assert_array_equal((await stays)["y"], x_of(2)["x"] * 2 + 1)
        await first
        with pytest.raises(asyncio.CancelledError):
            await gone
        return model

    model = run(main())
    assert model.rows == [1, 1]  # the cancelled request was never executed
    assert float(model.batches[1]["x"][0, 0]) == 2


def test_batcher_keeps_others_answers_when_running_waiter_is_cancelled():
    async def main() -> None:
        model = FakeModel(gated=True)
        batcher = DynamicBatcher(make_spec(), model, max_inflight=1)
        first = asyncio.ensure_future(batcher.submit(x_of(0)))
        await wait_until(lambda: model.running == 1)
        futs = [asyncio.ensure_future(batcher.submit(x_of(i))) for i in range(1, 4)]
        await wait_until(lambda: batcher.queue_depth == 3)
        model.gate.clear()
        model.gate.set()
        await first
        model.gate = asyncio.Event()
        await wait_until(lambda: model.running == 1 and model.rows == [1, 3])
        futs[1].cancel()  # client of the middle request goes away mid-execution
        model.gate.set()
        np.testing.assert_array_equal((await futs[0])["y"], x_of(1)["x"] * 2 + 1)
        np.testing.assert_array_equal((await futs[2])["y"], x_of(3)["x"] * 2 + 1)
        with pytest.raises(asyncio.CancelledError):
            await futs[1]

    run(main())


# --- ordering, lifecycle, metrics -------------------------------------------------------


def test_batcher_answers_in_dispatch_order_when_preserve_ordering_is_set():
    async def main() -> list[int]:
        done: list[int] = []
        first_gate = asyncio.Event()

        async def execute(batch: TensorDict) -> TensorDict:
            if float(batch["x"][0, 0]) == 0:
                await first_gate.wait()  # the first batch is slow
            return {"y": batch["x"]}

        batcher = DynamicBatcher(make_spec(preserve_ordering=True), execute, max_inflight=2)

        async def one(i: int) -> None:
            await batcher.submit(x_of(i))
            done.append(i)

        a = asyncio.ensure_future(one(0))
        await wait_until(lambda: batcher.inflight == 1)
        b = asyncio.ensure_future(one(1))
        await wait_until(lambda: batcher.inflight == 2)
        await asyncio.sleep(0.02)
        assert done == []  # the fast second batch is held back
        first_gate.set()
        await asyncio.gather(a, b)
        return done

    assert run(main()) == [0, 1]


def test_batcher_runs_queued_requests_when_closed_and_refuses_new_ones():
    async def main() -> None:
        model = FakeModel(gated=True)
        batcher = DynamicBatcher(
            make_spec(preferred=(8,), delay_us=5_000_000), model, max_inflight=1
        )
        futs = [asyncio.ensure_future(batcher.submit(x_of(0)))]
        await wait_until(lambda: model.running == 1)
        futs += [asyncio.ensure_future(batcher.submit(x_of(i))) for i in range(1, 5)]
        await wait_until(lambda: batcher.queue_depth == 4)
        closing = asyncio.ensure_future(batcher.close())
        await asyncio.sleep(0)
        with pytest.raises(UnavailableError, match="model 'toy' version : shutting down"):
            await batcher.submit(x_of(9))
        model.gate.set()
        await closing
        assert all(f.done() and not f.exception() for f in futs)
        assert sum(model.rows) == 5

    run(main())


def test_batcher_reports_timing_and_executions_when_metrics_given():
    metrics = ModelMetrics()
    stats = StatsAggregator()

    async def main() -> FakeModel:
        from rayfront.metrics import RecorderGroup

        model = FakeModel()
        batcher = DynamicBatcher(
            make_spec(), model, version="2", metrics=RecorderGroup(metrics, stats)
        )
        await asyncio.gather(*(batcher.submit(x_of(i, rows=2)) for i in range(10)))
        return model

    model = run(main())
    labels = {"model": "toy", "version": "2"}
    # Request outcomes are the data plane's to record; the batcher reports timing and batches.
    assert metrics.counter("nv_inference_request_success", **labels) == 0
    assert metrics.counter("nv_inference_count", **labels) == 20
    assert metrics.counter("nv_inference_exec_count", **labels) == len(model.batches)
    assert metrics.counter("nv_inference_compute_infer_duration_us", **labels) > 0
    [snap] = stats.snapshot("toy", "2")
    assert snap["inference_count"] == 20
    assert snap["inference_stats"]["queue"]["count"] == 10
    assert snap["inference_stats"]["compute_infer"]["count"] == 10
    assert sum(b["compute_infer"]["count"] for b in snap["batch_stats"]) == len(model.batches)


def test_batcher_rejects_spec_when_dynamic_batching_is_missing():
    with pytest.raises(ValueError, match="has no dynamic_batching"):
        DynamicBatcher(make_spec(batching=False), FakeModel())


# --- DirectExecutor ---------------------------------------------------------------------


def test_direct_executor_runs_requests_one_by_one_when_batching_is_off():
    async def main() -> FakeModel:
        model = FakeModel()
        executor = make_executor(make_spec(batching=False), model, max_inflight=2)
        assert isinstance(executor, DirectExecutor)
        requests = [x_of(i, rows=1 + i % 3) for i in range(30)]
        results = await asyncio.gather(*(executor.submit(r) for r in requests))
        for req, res in zip(requests, results, strict=True):
            np.testing.assert_array_equal(res["y"], req["x"] * 2 + 1)
        await executor.close()
        return model

    model = run(main())
    assert len(model.batches) == 30
    assert model.max_running == 2


def test_direct_executor_raises_deadline_exceeded_when_no_slot_frees_in_time():
    async def main() -> None:
        model = FakeModel(gated=True)
        executor = DirectExecutor(make_spec(batching=False), model, max_inflight=1)
        busy = asyncio.ensure_future(executor.submit(x_of(0)))
        await wait_until(lambda: model.running == 1)
        with pytest.raises(
            DeadlineExceededError, match=r"waiting for an execution slot \(timeout 10000 us\)"
        ):
            await executor.submit(x_of(1), timeout_us=10_000)
        model.gate.set()
        await busy
        await executor.close()
        with pytest.raises(UnavailableError, match="shutting down"):
            await executor.submit(x_of(2))

    run(main())


def test_make_executor_returns_batcher_when_dynamic_batching_is_set():
    assert isinstance(make_executor(make_spec(), FakeModel()), DynamicBatcher)


# --- isolating a poisoned request --------------------------------------------------------


def _poisonable(batch: TensorDict) -> TensorDict:
    """Fails the whole batch when any row is negative, naming the value (as ORT does)."""
    bad = batch["x"][:, 0] < 0
    if bad.any():
        raise InternalError(f"model 'toy': index {float(batch['x'][bad][0, 0])} out of range")
    return {"y": batch["x"] * 2 + 1}


def test_batcher_fails_only_the_poisoned_request_when_its_batch_fails():
    metrics = ModelMetrics()

    async def main() -> tuple[list[Any], FakeModel, int]:
        model = FakeModel(_poisonable, gated=True)
        batcher = DynamicBatcher(make_spec(max_batch=8), model, max_inflight=1, metrics=metrics)
        futs = [asyncio.ensure_future(batcher.submit(x_of(0)))]
        await wait_until(lambda: model.running == 1)
        values = [1, 2, 3, -7, 5, 6, 7, 8]  # the 4th client sends a value the model rejects
        futs += [asyncio.ensure_future(batcher.submit(x_of(v))) for v in values]
        await wait_until(lambda: batcher.queue_depth == 8)
        model.gate.set()
        results = await asyncio.gather(*futs, return_exceptions=True)
        return results, model, batcher.isolations

    results, model, isolations = run(main())
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(failed) == 1
    assert isinstance(failed[0], InternalError) and "-7.0" in str(failed[0])
    for value, out in zip(
        [0, 1, 2, 3, 5, 6, 7, 8],
        [r for r in results if not isinstance(r, BaseException)],
        strict=True,
    ):
        np.testing.assert_array_equal(out["y"], np.full((1, 3), value * 2 + 1, np.float32))
    # The innocent answers never carry the poisoner's value.
    assert all("-7" not in str(r) for r in results if not isinstance(r, BaseException))
    assert isolations == 3  # 8 -> 4 -> 2 -> 1: three splits down to the poisoned request
    assert model.rows[:2] == [1, 8]
    text = metrics.render().decode()
    assert 'rayfront_batch_isolations_total{model="toy",version=""} 3.0' in text


def test_batcher_does_not_bisect_when_the_model_misaligns_rows():
    async def main() -> list[BaseException]:
        model = FakeModel(lambda b: {"y": b["x"][:1]}, gated=True)
        batcher = DynamicBatcher(make_spec(), model, max_inflight=1)
        futs = [asyncio.ensure_future(batcher.submit(x_of(0)))]
        await wait_until(lambda: model.running == 1)
        futs += [asyncio.ensure_future(batcher.submit(x_of(i))) for i in range(1, 5)]
        await wait_until(lambda: batcher.queue_depth == 4)
        model.gate.set()
        results = await asyncio.gather(*futs, return_exceptions=True)
        assert model.rows == [1, 4]  # no re-runs: a broken model is not a bad request
        assert batcher.isolations == 0
        return results[1:]

    results = run(main())
    assert all(isinstance(r, InternalError) and "expected 4" in str(r) for r in results)


def test_batcher_reports_queue_compute_and_batch_when_request_carries_timing():
    from rayfront.tracing import StageTiming

    async def main() -> tuple[StageTiming, StageTiming]:
        model = FakeModel(gated=True)
        batcher = DynamicBatcher(make_spec(max_batch=8), model, max_inflight=1)
        first_timing, second_timing = StageTiming(), StageTiming()
        first = asyncio.ensure_future(batcher.submit(x_of(0), timing=first_timing))
        await wait_until(lambda: model.running == 1)
        # Queued behind the running batch, with a friend: they leave together.
        second = asyncio.ensure_future(batcher.submit(x_of(1, rows=2), timing=second_timing))
        third = asyncio.ensure_future(batcher.submit(x_of(2)))
        await wait_until(lambda: batcher.queue_depth == 2)
        await asyncio.sleep(0.05)
        model.gate.set()
        await asyncio.gather(first, second, third)
        return first_timing, second_timing

    first, second = run(main())
    assert first.batch_requests == 1 and first.batch_rows == 1
    assert second.batch_requests == 2 and second.batch_rows == 3
    assert second.queue_s >= 0.04 and second.compute_s >= 0.0


def test_direct_executor_reports_its_timing_when_request_carries_timing():
    from rayfront.tracing import StageTiming

    async def main() -> StageTiming:
        timing = StageTiming()
        executor = DirectExecutor(make_spec(batching=False), FakeModel())
        await executor.submit(x_of(0, rows=2), timing=timing)
        return timing

    timing = run(main())
    assert timing.batch_requests == 1 and timing.batch_rows == 2 and timing.compute_s >= 0
