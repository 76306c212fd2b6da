"""VersionEngine on a real ONNX model: instances, warm-up before ready, batching, load report."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from rayfront.engine import (
    EngineSettings,
    LoadMeter,
    VersionEngine,
    instance_plan,
    sample_inputs,
    warmup_samples,
)
from rayfront.errors import RepositoryError, UnavailableError
from rayfront.spec import (
    DynamicBatching,
    InstanceGroup,
    ModelSpec,
    ModelWarmup,
    TensorSpec,
    WarmupInput,
)


def _write_scale_onnx(path: Path, factor: float) -> None:
    import onnx
    from onnx import TensorProto, helper

    k = helper.make_node(
        "Constant", [], ["k"], value=helper.make_tensor("k", TensorProto.FLOAT, [], [factor])
    )
    graph = helper.make_graph(
        [k, helper.make_node("Mul", ["x", "k"], ["y"])],
        "scale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)


def _spec(**kw: object) -> ModelSpec:
    base: dict[str, object] = dict(
        name="scale",
        platform="onnxruntime_onnx",
        max_batch_size=16,
        inputs=(TensorSpec(name="x", datatype="FP32", dims=(4,)),),
        outputs=(TensorSpec(name="y", datatype="FP32", dims=(4,)),),
        dynamic_batching=DynamicBatching(
            preferred_batch_size=(4, 8), max_queue_delay_microseconds=500
        ),
    )
    base.update(kw)
    return ModelSpec(**base)  # type: ignore[arg-type]


@pytest.fixture
def version_dir(tmp_path: Path) -> Path:
    _write_scale_onnx(tmp_path / "scale" / "1" / "model.onnx", 3.0)
    return tmp_path / "scale" / "1"


def test_engine_refuses_requests_until_warmed_up_then_batches_them(version_dir: Path):
    async def scenario() -> VersionEngine:
        engine = VersionEngine.load(_spec(), version_dir, "1", gpus_visible=0)
        with pytest.raises(UnavailableError, match="still warming up"):
            await engine.submit({"x": np.ones((1, 4), np.float32)})
        await engine.warm_up()
        assert engine.ready
        outs = await asyncio.gather(
            *(engine.submit({"x": np.full((1, 4), float(i), np.float32)}) for i in range(40))
        )
        for i, out in enumerate(outs):
            np.testing.assert_allclose(out["y"], np.full((1, 4), 3.0 * i))
        await engine.close()
        return engine

    engine = asyncio.run(scenario())
    assert engine.warmup_s > 0


def test_engine_runs_count_instances_and_reports_capacity_when_instance_group_says_so(
    version_dir: Path,
):
    spec = _spec(instance_groups=(InstanceGroup(kind="KIND_CPU", count=3),))
    engine = VersionEngine.load(spec, version_dir, "1", settings=EngineSettings(depth=2))
    assert len(engine.pool.instances) == 3
    assert engine.pool.capacity == 6
    assert engine.queue.max_inflight == 6
    asyncio.run(engine.close())


def test_engine_load_report_shows_queue_and_capacity_when_read(version_dir: Path):
    async def scenario() -> dict[str, float]:
        engine = VersionEngine.load(_spec(), version_dir, "1", gpus_visible=0)
        await engine.warm_up()
        engine.load_report()  # start a fresh window
        await asyncio.gather(
            *(engine.submit({"x": np.ones((1, 4), np.float32)}) for _ in range(64))
        )
        report = engine.load_report()
        await engine.close()
        return report

    report = asyncio.run(scenario())
    assert report["capacity"] == 2.0
    assert report["max_batch"] == 16.0
    assert report["queued_peak"] > 0  # 64 requests at once did wait in the batcher
    assert set(report) >= {"queued", "inflight", "queue_wait_s"}


def test_default_warmup_covers_preferred_sizes_and_the_max_when_config_has_none():
    samples = warmup_samples(_spec())
    assert [s.batch_size for s in samples] == [1, 4, 8, 16]
    assert all(s.inputs["x"].source == "zero" for s in samples)


def test_default_warmup_is_skipped_when_turned_off_or_inputs_are_bytes():
    assert warmup_samples(_spec(parameters={"rayfront.warmup": "off"})) == []
    text = _spec(inputs=(TensorSpec(name="x", datatype="BYTES", dims=(1,)),))
    assert warmup_samples(text) == []


def test_model_warmup_config_wins_and_reads_its_file_when_given(tmp_path: Path):
    sample = ModelWarmup(
        name="real image",
        batch_size=2,
        count=3,
        inputs={"x": WarmupInput(datatype="FP32", dims=(4,), source="file", file="x.bin")},
    )
    spec = _spec(model_warmup=(sample,))
    assert warmup_samples(spec) == [sample]
    (tmp_path / "warmup").mkdir()
    np.arange(4, dtype="<f4").tofile(tmp_path / "warmup" / "x.bin")
    inputs = sample_inputs(sample, tmp_path, np.random.default_rng(0))
    np.testing.assert_array_equal(inputs["x"], np.tile(np.arange(4, dtype=np.float32), (2, 1)))
    np.arange(3, dtype="<f4").tofile(tmp_path / "warmup" / "x.bin")
    with pytest.raises(RepositoryError, match="3 FP32 values, expected 4"):
        sample_inputs(sample, tmp_path, np.random.default_rng(0))


def test_model_warmup_runs_on_every_instance_count_times_when_engine_warms_up(
    version_dir: Path,
):
    sample = ModelWarmup(
        name="random",
        batch_size=3,
        count=2,
        inputs={"x": WarmupInput(datatype="FP32", dims=(4,), source="random")},
    )
    spec = _spec(model_warmup=(sample,), instance_groups=(InstanceGroup(kind="KIND_CPU", count=2),))

    async def scenario() -> list[int]:
        engine = VersionEngine.load(spec, version_dir, "1", gpus_visible=0)
        calls: list[int] = []
        runtimes = {id(i.runtime): i.runtime for i in engine.pool.instances}
        assert len(runtimes) == 1  # the instances share one thread-safe ONNX session
        for runtime in runtimes.values():
            original = runtime.infer

            def counting(inputs, original=original):  # type: ignore[no-untyped-def]
                calls.append(int(inputs["x"].shape[0]))
                return original(inputs)

            runtime.infer = counting  # type: ignore[method-assign]
        await engine.warm_up()
        await engine.close()
        return calls

    # 2 instances x 2 runs, 3 rows each.
    assert asyncio.run(scenario()) == [3, 3, 3, 3]


@pytest.mark.parametrize(
    ("groups", "gpus", "expected"),
    [
        ((InstanceGroup(kind="KIND_CPU", count=2),), 0, ("CPU", (), 2)),
        ((InstanceGroup(kind="KIND_GPU", count=2),), 1, ("GPU", (0,), 2)),
        ((InstanceGroup(kind="KIND_GPU", count=1),), 4, ("GPU", (0, 1, 2, 3), 1)),
        ((InstanceGroup(kind="KIND_GPU", count=3, gpus=(0, 1)),), 2, ("GPU", (0, 1), 3)),
        ((InstanceGroup(kind="KIND_AUTO", count=2),), 0, ("CPU", (), 2)),
        ((InstanceGroup(kind="KIND_AUTO", count=2),), 1, ("GPU", (0,), 2)),
        (
            (InstanceGroup(kind="KIND_CPU", count=2), InstanceGroup(kind="KIND_CPU", count=1)),
            0,
            ("CPU", (), 3),
        ),
    ],
)
def test_instance_plan_follows_triton_semantics_when_given_groups(groups, gpus, expected):
    plan = instance_plan(_spec(instance_groups=groups), gpus)
    assert (plan.kind, plan.devices, plan.per_device) == expected


def test_instance_plan_refuses_gpus_the_replica_does_not_have():
    spec = _spec(instance_groups=(InstanceGroup(kind="KIND_GPU", count=1, gpus=(0, 3)),))
    with pytest.raises(RepositoryError, match=r"names GPUs \[0, 3\], but this replica sees 2"):
        instance_plan(spec, 2)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_load_meter_averages_queue_and_inflight_over_the_window_when_read():
    clock = _Clock()
    meter = LoadMeter(clock)
    meter.set_pending("m", "1", 10)  # 10 queued for 1 s
    meter.enter()
    clock.now = 1.0
    meter.set_pending("m", "1", 0)  # then 0 queued, 1 running, for 1 s
    meter.record_timing("m", "1", queue_s=0.2, compute_s=0.1)
    meter.record_timing("m", "1", queue_s=0.4, compute_s=0.1)
    clock.now = 2.0
    report = meter.read()
    assert report["queued"] == pytest.approx(5.0)
    assert report["queued_peak"] == 10
    assert report["inflight"] == pytest.approx(1.0)
    assert report["queue_wait_s"] == pytest.approx(0.3)
    meter.exit()
    clock.now = 4.0
    assert meter.read()["inflight"] == pytest.approx(0.0)  # a new window
