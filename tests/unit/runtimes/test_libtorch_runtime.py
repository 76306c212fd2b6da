"""TorchScript runtime: argument/output order, devices (CPU here, CUDA when marked), errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rayfront.errors import InternalError, InvalidArgumentError, RepositoryError
from rayfront.runtimes import TorchScriptRuntime, load_runtime
from rayfront.runtimes.libtorch import tensor_order, torch_device
from rayfront.spec import InstanceGroup, ModelSpec, TensorSpec

# Building test modules uses torch.jit.trace/script, which torch now marks deprecated.
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit:DeprecationWarning")

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def _save_two_in_two_out(path: Path) -> object:
    """forward(a, b) -> (a @ W + b, a.sum(1, keepdim=True)); traced, saved to ``path``."""
    import torch

    class TwoInTwoOut(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.lin(a) + b, a.sum(1, keepdim=True)

    torch.manual_seed(0)
    module = TwoInTwoOut().eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.trace(module, (torch.randn(2, 4), torch.randn(2, 3))).save(str(path))
    return module


def _spec(
    kind: str = "KIND_CPU",
    parameters: dict[str, str] | None = None,
    outputs: tuple[str, ...] = ("total", "scores"),
) -> ModelSpec:
    # Config order deliberately differs from forward's: the parameters fix it.
    dims = {"total": (1,), "scores": (3,)}
    return ModelSpec(
        name="ts",
        platform="pytorch_libtorch",
        max_batch_size=8,
        inputs=(
            TensorSpec(name="bias", datatype="FP32", dims=(3,)),
            TensorSpec(name="feats", datatype="FP32", dims=(4,)),
        ),
        outputs=tuple(TensorSpec(name=o, datatype="FP32", dims=dims[o]) for o in outputs),
        instance_groups=(InstanceGroup(kind=kind),),  # type: ignore[arg-type]
        parameters=parameters
        if parameters is not None
        else {"rayfront_input_order": "feats,bias", "rayfront_output_order": "scores,total"},
    )


@pytest.mark.parametrize("device", DEVICES)
def test_torchscript_runtime_matches_torch_when_run_on_device(tmp_path, device):
    import torch

    vdir = tmp_path / "ts" / "1"
    module = _save_two_in_two_out(vdir / "model.pt")
    kind = "KIND_GPU" if device == "cuda" else "KIND_CPU"
    runtime = load_runtime(_spec(kind), vdir)
    assert isinstance(runtime, TorchScriptRuntime)
    assert runtime.describe()["device"].startswith(device)
    for batch in (1, 5):
        a = np.random.default_rng(batch).standard_normal((batch, 4)).astype(np.float32)
        b = np.random.default_rng(batch + 10).standard_normal((batch, 3)).astype(np.float32)
        a.flags.writeable = False  # as Ray hands arrays over
        out = runtime.infer({"feats": a, "bias": b})
        with torch.no_grad():
            scores, total = module(torch.from_numpy(a.copy()), torch.from_numpy(b))  # type: ignore[operator]
        assert list(out) == ["total", "scores"]
        np.testing.assert_allclose(out["scores"], scores.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out["total"], total.numpy(), rtol=1e-5, atol=1e-5)


def test_torchscript_runtime_maps_dict_outputs_by_name_when_module_returns_dict(tmp_path):
    import torch

    class DictOut(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"double": x * 2, "neg": -x}

    vdir = tmp_path / "d" / "1"
    vdir.mkdir(parents=True)
    torch.jit.script(DictOut()).save(str(vdir / "model.pt"))
    spec = ModelSpec(
        name="d",
        platform="pytorch_libtorch",
        max_batch_size=4,
        inputs=(TensorSpec(name="x", datatype="FP32", dims=(2,)),),
        outputs=(
            TensorSpec(name="neg", datatype="FP32", dims=(2,)),
            TensorSpec(name="double", datatype="FP32", dims=(2,)),
        ),
    )
    out = load_runtime(spec, vdir).infer({"x": np.array([[1.0, 2.0]], np.float32)})
    np.testing.assert_array_equal(out["neg"], [[-1.0, -2.0]])
    np.testing.assert_array_equal(out["double"], [[2.0, 4.0]])


def test_torchscript_runtime_raises_internal_error_when_forward_fails(tmp_path):
    vdir = tmp_path / "ts" / "1"
    _save_two_in_two_out(vdir / "model.pt")
    runtime = load_runtime(_spec(), vdir)
    with pytest.raises(
        InternalError,
        match=r"model 'ts': TorchScript forward failed: The size of tensor a \(2\) must match",
    ) as info:
        runtime.infer({"feats": np.ones((2, 4), np.float32), "bias": np.ones((3, 3), np.float32)})
    assert "\n" not in str(info.value) and "Traceback" not in str(info.value)


def test_torchscript_runtime_raises_invalid_argument_when_input_missing(tmp_path):
    vdir = tmp_path / "ts" / "1"
    _save_two_in_two_out(vdir / "model.pt")
    runtime = load_runtime(_spec(), vdir)
    with pytest.raises(InvalidArgumentError, match="model 'ts': missing required input 'bias'"):
        runtime.infer({"feats": np.ones((2, 4), np.float32)})


def test_torchscript_runtime_raises_internal_error_when_output_count_differs(tmp_path):
    vdir = tmp_path / "ts" / "1"
    _save_two_in_two_out(vdir / "model.pt")
    spec = _spec(parameters={"rayfront_input_order": "feats,bias"}, outputs=("scores",))
    runtime = load_runtime(spec, vdir)
    with pytest.raises(
        InternalError, match=r"forward returned 2 tensor\(s\), the config declares 1"
    ):
        runtime.infer({"feats": np.ones((1, 4), np.float32), "bias": np.ones((1, 3), np.float32)})


def test_torchscript_runtime_refuses_load_when_file_is_not_torchscript(tmp_path):
    vdir = tmp_path / "ts" / "1"
    vdir.mkdir(parents=True)
    (vdir / "model.pt").write_bytes(b"not a zip archive")
    with pytest.raises(
        RepositoryError, match=r"model 'ts' version 1: torch\.jit\.load cannot load model\.pt"
    ):
        load_runtime(_spec(), vdir)


def _named(*names: str) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(name=n, datatype="FP32", dims=(1,)) for n in names)


@pytest.mark.parametrize(
    ("names", "parameters", "expected"),
    [
        (("b", "a"), {}, ["b", "a"]),  # config order
        (("INPUT__1", "INPUT__0"), {}, ["INPUT__0", "INPUT__1"]),  # Triton's NAME__i
        (("x__0", "y"), {}, ["x__0", "y"]),  # mixed: config order
        (("INPUT__0", "INPUT__2"), {}, ["INPUT__0", "INPUT__2"]),  # gap: config order
        (("b", "a"), {"rayfront_input_order": "a, b"}, ["a", "b"]),  # explicit wins
    ],
)
def test_tensor_order_follows_rules_when_names_and_parameters_vary(names, parameters, expected):
    spec = ModelSpec(
        name="m", platform="pytorch_libtorch", inputs=_named(*names), outputs=_named("o"),
        parameters=parameters,
    )  # fmt: skip
    assert tensor_order(spec, spec.inputs, "rayfront_input_order") == expected


def test_tensor_order_raises_when_parameter_names_other_tensors():
    spec = ModelSpec(
        name="m", platform="pytorch_libtorch", inputs=_named("a", "b"), outputs=_named("o"),
        parameters={"rayfront_input_order": "a,c"},
    )  # fmt: skip
    with pytest.raises(
        RepositoryError, match=r"parameter 'rayfront_input_order' lists \['a', 'c'\]"
    ):
        tensor_order(spec, spec.inputs, "rayfront_input_order")


@pytest.mark.parametrize(
    ("kind", "cuda", "expected"),
    [
        ("KIND_CPU", True, "cpu"),
        ("KIND_GPU", True, "cuda:0"),
        ("KIND_AUTO", True, "cuda:0"),
        ("KIND_AUTO", False, "cpu"),
    ],
)
def test_torch_device_follows_instance_group_when_kind_is(kind, cuda, expected):
    assert torch_device(_spec(kind), cuda_available=cuda) == expected


def test_torch_device_refuses_gpu_group_when_cuda_missing():
    with pytest.raises(RepositoryError, match="instance_group KIND_GPU needs CUDA"):
        torch_device(_spec("KIND_GPU"), cuda_available=False)
    allowed = _spec("KIND_GPU", parameters={"allow_cpu_fallback": "1"})
    assert torch_device(allowed, cuda_available=False) == "cpu"


def test_runtimes_package_imports_no_framework_when_imported():
    code = (
        "import sys, rayfront.runtimes, rayfront.batching, rayfront.metrics, rayfront.stats; "
        "print(sorted(m for m in ('torch', 'onnxruntime', 'tensorrt', 'onnx') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("device", "precision", "tol"),
    [
        ("cpu", "fp16", 1e-5),  # a GPU setting: the CPU computes in FP32 and says so
        pytest.param("cuda", "fp16", 2e-2, marks=pytest.mark.gpu),
        pytest.param("cuda", "bf16", 5e-2, marks=pytest.mark.gpu),
    ],
)
def test_torchscript_runtime_computes_in_precision_when_parameter_set(
    tmp_path, caplog, device, precision, tol
):
    import torch

    vdir = tmp_path / "ts" / "1"
    module = _save_two_in_two_out(vdir / "model.pt")
    kind = "KIND_GPU" if device == "cuda" else "KIND_CPU"
    params = {
        "rayfront_input_order": "feats,bias",
        "rayfront_output_order": "scores,total",
        "rayfront.precision": precision,
    }
    with caplog.at_level("WARNING"):
        runtime = load_runtime(_spec(kind, parameters=params), vdir)
    served = runtime.describe()["precision"]
    assert served == (precision if device == "cuda" else "fp32")
    if device == "cpu":
        assert "fp16 applies on a GPU" in caplog.text
    a = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    b = np.random.default_rng(1).standard_normal((3, 3)).astype(np.float32)
    out = runtime.infer({"feats": a, "bias": b})
    with torch.no_grad():
        scores, _ = module(torch.from_numpy(a), torch.from_numpy(b))  # type: ignore[operator]
    assert out["scores"].dtype == np.float32
    np.testing.assert_allclose(out["scores"], scores.numpy(), rtol=tol, atol=tol)
