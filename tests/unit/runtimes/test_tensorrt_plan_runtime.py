"""TensorRT runtime: plan-stamp refusal and profile selection (pure), full runs when marked."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from runtime_models import linear_reference, linear_spec, write_linear_onnx

from rayfront.errors import InvalidArgumentError, PlanMismatchError, RepositoryError
from rayfront.repository.sidecar import Provenance, TensorRTStamp, write_sidecar
from rayfront.runtimes import TensorRTRuntime, load_runtime, runtime_class_for
from rayfront.runtimes.tensorrt_plan import check_plan_compatible, select_profile

LABEL = "model 'x' version 2"


def _stamp(version: str = "10.3.0", capability: str = "8.0") -> TensorRTStamp:
    return TensorRTStamp(
        tensorrt_version=version,
        compute_capability=capability,
        gpu_name="NVIDIA A100-SXM4-80GB",
        fp16=False,
    )


def test_check_plan_compatible_accepts_plan_when_release_and_gpu_match():
    check_plan_compatible(LABEL, _stamp("10.3.0.26"), "10.3.0.1", "8.0")  # build number differs


def test_check_plan_compatible_refuses_plan_when_tensorrt_and_gpu_differ():
    with pytest.raises(PlanMismatchError) as info:
        check_plan_compatible(LABEL, _stamp("10.3.0", "8.0"), "10.5.0", "9.0")
    assert str(info.value) == (
        "model 'x' version 2: plan built with TensorRT 10.3.0 for compute capability 8.0 "
        "(NVIDIA A100-SXM4-80GB); this host has TensorRT 10.5.0 on compute capability 9.0 "
        "— re-export with `rayfront export --tensorrt on` on this host"
    )


@pytest.mark.parametrize(
    ("host_trt", "host_cc"),
    [("10.3.1", "8.0"), ("10.3.0", "8.6"), ("9.3.0", "8.0")],
)
def test_check_plan_compatible_refuses_plan_when_either_fact_differs(host_trt, host_cc):
    with pytest.raises(
        PlanMismatchError,
        match=rf"this host has TensorRT {host_trt} on compute capability {host_cc}",
    ):
        check_plan_compatible(LABEL, _stamp(), host_trt, host_cc)


def test_check_plan_compatible_refuses_plan_when_unstamped():
    with pytest.raises(
        PlanMismatchError,
        match=r"model 'x' version 2: the plan has no TensorRT stamp.*allow_unstamped_plan=true",
    ):
        check_plan_compatible(LABEL, None, "10.3.0", "8.0")


def _profile(lo: int, opt: int, hi: int, width: int = 4) -> dict[str, dict[str, list[int]]]:
    return {"x": {"min": [lo, width], "opt": [opt, width], "max": [hi, width]}}


def test_select_profile_returns_only_profile_when_shape_fits():
    assert select_profile([_profile(1, 8, 32)], {"x": (5, 4)}) == 0


@pytest.mark.parametrize(
    ("batch", "expected"), [(1, 0), (4, 0), (8, 1), (16, 1), (20, 1), (24, 2), (32, 2)]
)
def test_select_profile_picks_closest_opt_when_several_profiles_fit(batch, expected):
    profiles = [_profile(1, 1, 32), _profile(1, 8, 32), _profile(8, 32, 32)]
    assert select_profile(profiles, {"x": (batch, 4)}) == expected


def test_select_profile_raises_when_shape_is_outside_every_profile():
    with pytest.raises(
        InvalidArgumentError,
        match=r"input 'x' of model 'm': shape \[64, 4\] is outside every TensorRT optimization "
        r"profile \(\[1, 4\]\.\.\[32, 4\]; \[8, 4\]\.\.\[48, 4\]\)",
    ):
        select_profile([_profile(1, 8, 32), _profile(8, 16, 48)], {"x": (64, 4)}, model="m")


def test_select_profile_raises_when_inputs_fit_different_profiles():
    profiles = [
        {"a": {"min": [1], "opt": [1], "max": [4]}, "b": {"min": [1], "opt": [1], "max": [4]}},
        {"a": {"min": [5], "opt": [8], "max": [8]}, "b": {"min": [5], "opt": [8], "max": [8]}},
    ]
    with pytest.raises(InvalidArgumentError, match="fit no single TensorRT optimization profile"):
        select_profile(profiles, {"a": (2,), "b": (6,)}, model="m")


def test_select_profile_raises_when_rank_differs():
    with pytest.raises(InvalidArgumentError, match=r"shape \[2\] is outside every"):
        select_profile([_profile(1, 8, 32)], {"x": (2,)}, model="m")


def test_registry_maps_tensorrt_platform_and_backend_when_spec_names_either():
    assert runtime_class_for(linear_spec(platform="tensorrt_plan")) is TensorRTRuntime
    assert runtime_class_for(linear_spec(platform="", backend="tensorrt")) is TensorRTRuntime


def _plan_dir(tmp_path: Path) -> Path:
    vdir = tmp_path / "x" / "2"
    vdir.mkdir(parents=True)
    (vdir / "model.plan").write_bytes(b"\0" * 16)
    return vdir


def test_tensorrt_runtime_refuses_cpu_instance_group_when_loading(tmp_path):
    with pytest.raises(
        RepositoryError, match="TensorRT plans run only on a GPU; set instance_group kind KIND_GPU"
    ):
        load_runtime(linear_spec("x", platform="tensorrt_plan"), _plan_dir(tmp_path))


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed"
)
def test_tensorrt_runtime_says_package_missing_when_tensorrt_absent(tmp_path):
    spec = linear_spec("x", platform="tensorrt_plan", kind="KIND_GPU")
    with pytest.raises(
        RepositoryError, match="model 'x' version 2: the tensorrt package is not installed"
    ):
        load_runtime(spec, _plan_dir(tmp_path))


# --- real TensorRT (Dockerfile.gpu) ---------------------------------------------------------


def _build_plan(
    tmp_path: Path, stamp_override: dict[str, str] | None = None
) -> tuple[Path, np.ndarray, np.ndarray]:
    from rayfront.export.tensorrt import build_plan

    onnx_path = tmp_path / "src" / "model.onnx"
    w, b = write_linear_onnx(onnx_path)
    vdir = tmp_path / "linear" / "2"
    vdir.mkdir(parents=True)
    profiles = {"x": {"min": [1, 4], "opt": [4, 4], "max": [8, 4]}}
    stamp = build_plan(onnx_path, vdir / "model.plan", model_name="linear", profiles=profiles)
    if stamp_override:
        stamp = stamp.model_copy(update=stamp_override)
    write_sidecar(
        vdir,
        Provenance(source="tests", created_at=datetime.now(UTC), exporter="legacy", tensorrt=stamp),
    )
    return vdir, w, b


@pytest.mark.tensorrt
@pytest.mark.parametrize("batch", [1, 3, 8])
def test_tensorrt_runtime_matches_numpy_when_plan_is_stamped_for_this_host(tmp_path, batch):
    vdir, w, b = _build_plan(tmp_path)
    spec = linear_spec(platform="tensorrt_plan", kind="KIND_GPU")
    runtime = load_runtime(spec, vdir)
    assert isinstance(runtime, TensorRTRuntime)
    x = np.random.default_rng(batch).standard_normal((batch, 4)).astype(np.float32)
    out = runtime.infer({"x": x})
    expected = linear_reference(x, w, b)
    for name in ("y", "z"):
        np.testing.assert_allclose(out[name], expected[name], rtol=1e-3, atol=1e-3)
    runtime.close()


@pytest.mark.tensorrt
def test_tensorrt_runtime_refuses_plan_when_stamp_names_other_tensorrt(tmp_path):
    vdir, _, _ = _build_plan(tmp_path, {"tensorrt_version": "8.6.1"})
    spec = linear_spec(platform="tensorrt_plan", kind="KIND_GPU")
    with pytest.raises(PlanMismatchError, match=r"plan built with TensorRT 8\.6\.1 .* re-export"):
        load_runtime(spec, vdir)


@pytest.mark.tensorrt
def test_tensorrt_runtime_rejects_batch_when_outside_profile(tmp_path):
    vdir, _, _ = _build_plan(tmp_path)
    runtime = load_runtime(linear_spec(platform="tensorrt_plan", kind="KIND_GPU"), vdir)
    with pytest.raises(InvalidArgumentError, match="outside every TensorRT optimization profile"):
        runtime.infer({"x": np.ones((9, 4), np.float32)})


class _FakeContext:
    """Records how the runtime drives a TensorRT execution context."""

    def __init__(self, out_rows_from: str = "x") -> None:
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.profiles: list[int] = []
        self.streams: list[int] = []

    def set_optimization_profile_async(self, profile: int, stream: int) -> bool:
        self.profiles.append(profile)
        return True

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.shapes[name] = shape
        return True

    def set_tensor_address(self, name: str, ptr: int) -> None:
        self.addresses[name] = ptr

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (self.shapes["x"][0], 3)

    def execute_async_v3(self, stream: int) -> bool:
        self.streams.append(stream)
        return True


def _fake_trt_runtime() -> tuple[TensorRTRuntime, _FakeContext]:
    torch = pytest.importorskip("torch")
    rt = TensorRTRuntime.__new__(TensorRTRuntime)
    rt.spec = linear_spec(platform="tensorrt_plan", kind="KIND_GPU", outputs=("y",))
    rt._torch = torch
    rt._device = torch.device("cpu")
    rt._context = ctx = _FakeContext()
    rt._inputs = ["x"]
    rt._outputs = ["y", "aux"]  # an engine output the config does not list
    rt._torch_dtypes = {"x": torch.float32, "y": torch.float32, "aux": torch.float32}
    rt._profiles = [
        {"x": {"min": [1, 4], "opt": [4, 4], "max": [4, 4]}},
        {"x": {"min": [5, 4], "opt": [8, 4], "max": [8, 4]}},
    ]
    rt._active_profile = 0
    return rt, ctx


def test_tensorrt_enqueue_binds_inputs_in_place_and_declared_outputs_when_batch_arrives():
    import torch

    rt, ctx = _fake_trt_runtime()
    x = torch.zeros((3, 4))
    out = rt._enqueue({"x": x}, stream=1234)
    # The plan reads the pipeline's device buffer itself: no staging copy in between.
    assert ctx.addresses["x"] == x.data_ptr()
    assert ctx.shapes == {"x": (3, 4)} and ctx.streams == [1234] and ctx.profiles == []
    # Every engine output got an address; only the config's outputs go back.
    assert set(ctx.addresses) == {"x", "y", "aux"}
    assert list(out) == ["y"] and tuple(out["y"].shape) == (3, 3)
    assert ctx.addresses["y"] == out["y"].data_ptr()


def test_tensorrt_enqueue_switches_profile_only_when_batch_leaves_the_active_one():
    import torch

    rt, ctx = _fake_trt_runtime()
    rt._enqueue({"x": torch.zeros((6, 4))}, stream=1)
    rt._enqueue({"x": torch.zeros((7, 4))}, stream=1)
    rt._enqueue({"x": torch.zeros((2, 4))}, stream=1)
    assert ctx.profiles == [1, 0]
    with pytest.raises(InvalidArgumentError, match="missing input"):
        rt._enqueue({"pixels": torch.zeros((1, 4))}, stream=1)


@pytest.mark.tensorrt
def test_tensorrt_plan_runs_on_the_pinned_pipeline_with_one_context_per_instance(tmp_path):
    import asyncio

    from rayfront.runtimes.device_pipeline import CudaBackend, DevicePipeline
    from rayfront.spec import DynamicBatching

    vdir, w, b = _build_plan(tmp_path)
    spec = linear_spec(platform="tensorrt_plan", kind="KIND_GPU").model_copy(
        update={"dynamic_batching": DynamicBatching()}
    )
    first = load_runtime(spec, vdir)
    second = first.fork()
    assert second._context is not first._context and second._engine is first._engine
    pipelines = []
    for runtime in (first, second):
        program, device = runtime.device_program()
        pipelines.append(DevicePipeline(CudaBackend(program, spec, device), spec, depth=2))
    xs = [np.full((r, 4), float(r), np.float32) for r in (1, 2, 3)]

    async def main() -> list[list[dict[str, np.ndarray]]]:
        runs = [p.run([{"x": x} for x in xs]) for p in pipelines for _ in range(3)]
        return await asyncio.gather(*runs)

    try:
        answers = asyncio.run(main())
    finally:
        for p in pipelines:
            p.close()
    for answer in answers:
        for x, out in zip(xs, answer, strict=True):
            np.testing.assert_allclose(
                out["y"], linear_reference(x, w, b)["y"], rtol=1e-3, atol=1e-3
            )
