"""ONNX Runtime with IO binding on the pipeline's tensors (``OrtProgram``).

On CPU the program binds host torch tensors, the same calls it makes with CUDA tensors on
a GPU, and runs inside the real :class:`DevicePipeline` behind a host stand-in for the
CUDA backend: every concurrent request must get its own rows back. The CUDA run is
``gpu``-marked (it also needs onnxruntime-gpu).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from runtime_models import linear_reference, linear_spec, write_linear_onnx

from rayfront.errors import InvalidArgumentError
from rayfront.runtimes import load_runtime
from rayfront.runtimes.device_pipeline import DevicePipeline
from rayfront.runtimes.onnxruntime import CUDA_EP, OnnxRuntime
from rayfront.runtimes.ort_device import OrtProgram
from rayfront.runtimes.staging import HostSlot, plain_host
from rayfront.spec import DynamicBatching

torch = pytest.importorskip("torch")


@pytest.fixture
def linear(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    vdir = tmp_path / "linear" / "1"
    w, b = write_linear_onnx(vdir / "model.onnx")
    return vdir, w, b


def _runtime(vdir: Path, **update: Any) -> OnnxRuntime:
    spec = linear_spec().model_copy(update={"dynamic_batching": DynamicBatching(), **update})
    runtime = load_runtime(spec, vdir)
    assert isinstance(runtime, OnnxRuntime)
    return runtime


class HostTorchBackend:
    """CudaBackend's contract on host tensors: device buffers are torch views of the slot."""

    def __init__(self, program: OrtProgram) -> None:
        self.program = program
        self.launches = 0

    def host_allocator(self) -> Any:
        return plain_host

    def launch(self, slot: HostSlot, rows: int) -> Any:
        self.launches += 1
        inputs = {n: torch.from_numpy(a[:rows]) for n, a in slot.inputs.items()}
        return {n: t.numpy() for n, t in self.program.forward(inputs).items()}

    def wait(self, ticket: Any) -> dict[str, np.ndarray]:
        return ticket


@pytest.mark.parametrize("rows", [1, 5, 8])
def test_ort_program_matches_session_run_when_inputs_bound_by_address(linear, rows):
    vdir, w, b = linear
    program = OrtProgram(_runtime(vdir), "cpu")
    x = np.random.default_rng(rows).standard_normal((rows, 4)).astype(np.float32)
    out = program.forward({"x": torch.from_numpy(x)})
    assert set(out) == {"y", "z"}
    for name, ref in linear_reference(x, w, b).items():
        assert isinstance(out[name], torch.Tensor) and out[name].shape == (rows, 3)
        np.testing.assert_allclose(out[name].numpy(), ref, rtol=1e-5, atol=1e-6)


def test_ort_program_reads_a_strided_view_when_batch_is_a_slot_prefix(linear):
    vdir, w, b = linear
    program = OrtProgram(_runtime(vdir), "cpu")
    slot = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    view = torch.from_numpy(slot)[:3]
    out = program.forward({"x": view})
    np.testing.assert_allclose(out["y"].numpy(), linear_reference(slot[:3], w, b)["y"], rtol=1e-5)


def test_ort_program_lets_ort_allocate_when_output_dim_is_variable(linear):
    vdir, w, b = linear
    program = OrtProgram(_runtime(vdir), "cpu")
    # As for a config output declared with a -1 dim: no preallocation, ORT's own buffer.
    program._out_dims["y"] = None
    x = np.ones((2, 4), np.float32)
    out = program.forward({"x": torch.from_numpy(x)})
    assert list(out) == ["y", "z"]
    np.testing.assert_allclose(out["y"].numpy(), linear_reference(x, w, b)["y"], rtol=1e-5)
    np.testing.assert_allclose(out["z"].numpy(), linear_reference(x, w, b)["z"], rtol=1e-5)


def test_ort_program_names_the_input_when_it_is_unknown(linear):
    vdir, _, _ = linear
    program = OrtProgram(_runtime(vdir), "cpu")
    with pytest.raises(InvalidArgumentError, match="model 'linear' has no input 'pixels'"):
        program.forward({"pixels": torch.zeros((1, 4))})


def test_ort_program_refuses_unknown_device_type_when_built(linear):
    vdir, _, _ = linear
    with pytest.raises(ValueError, match="device_type must be 'cuda' or 'cpu', got 'tpu'"):
        OrtProgram(_runtime(vdir), "tpu")


def test_pipeline_answers_each_request_with_its_rows_when_ort_binds_slot_buffers(linear):
    vdir, w, b = linear
    runtime = _runtime(vdir)
    backend = HostTorchBackend(OrtProgram(runtime, "cpu"))
    pipeline = DevicePipeline(backend, runtime.spec, depth=2)
    rng = np.random.default_rng(3)
    batches = [
        [rng.standard_normal((rows, 4)).astype(np.float32) for rows in (1, 2, 3)] for _ in range(6)
    ]

    async def main() -> list[list[dict[str, np.ndarray]]]:
        return await asyncio.gather(*(pipeline.run([{"x": x} for x in batch]) for batch in batches))

    try:
        answers = asyncio.run(main())
    finally:
        pipeline.close()
    assert backend.launches == len(batches)
    for batch, answer in zip(batches, answers, strict=True):
        for x, out in zip(batch, answer, strict=True):
            for name, ref in linear_reference(x, w, b).items():
                np.testing.assert_allclose(out[name], ref, rtol=1e-5, atol=1e-6)


def test_onnx_runtime_offers_no_device_program_when_it_runs_on_cpu(linear):
    vdir, _, _ = linear
    assert _runtime(vdir).device_program() is None
    assert _runtime(vdir).describe()["io_binding"] == "false"


@pytest.mark.gpu
def test_onnx_runtime_runs_on_the_cuda_pipeline_with_io_binding_when_gpu_provider_exists(linear):
    import onnxruntime

    from rayfront.runtimes.device_pipeline import CudaBackend

    if CUDA_EP not in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed (no CUDAExecutionProvider)")
    vdir, w, b = linear
    spec = linear_spec(kind="KIND_GPU", parameters={"tensorrt_ep": "false"}).model_copy(
        update={"dynamic_batching": DynamicBatching()}
    )
    runtime = load_runtime(spec, vdir)
    offered = runtime.device_program()
    assert offered is not None
    program, device = offered
    pipeline = DevicePipeline(CudaBackend(program, spec, device), spec, depth=2)
    xs = [np.full((r, 4), float(r), np.float32) for r in (1, 3, 4)]

    async def main() -> list[dict[str, np.ndarray]]:
        return await pipeline.run([{"x": x} for x in xs])

    try:
        answers = asyncio.run(main())
    finally:
        pipeline.close()
    for x, out in zip(xs, answers, strict=True):
        np.testing.assert_allclose(out["y"], linear_reference(x, w, b)["y"], rtol=1e-4)
