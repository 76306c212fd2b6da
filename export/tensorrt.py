"""TensorRT: build a plan from the exported ONNX file, run it for parity, stamp it.

Written against TensorRT 10's Python API (``trt.Builder``, ``trt.OnnxParser``, builder config
with a workspace memory-pool limit, optional FP16, one optimization profile,
``build_serialized_network``; the runtime side uses ``set_input_shape``,
``set_tensor_address`` and ``execute_async_v3`` with torch CUDA tensors as buffers).
TensorRT is imported only inside the functions that need it, so everything else here -
profile computation, the availability check, stamp comparison - works and is tested on
machines without it.

A plan only runs on the TensorRT version and GPU architecture it was built for, so the
sidecar carries a :class:`~rayfront.repository.sidecar.TensorRTStamp` (made by
:func:`make_stamp`); the repository's validator and the TensorRT runtime refuse a plan whose
stamp does not match the machine.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rayfront.errors import ExportError, InputSpecError
from rayfront.export.specs import ShapeRange
from rayfront.repository.sidecar import TensorRTStamp
from rayfront.spec import TensorSpec

logger = logging.getLogger(__name__)

Profile = dict[str, list[int]]  # {"min": shape, "opt": shape, "max": shape}
DEFAULT_WORKSPACE_MB = 2048


def tensorrt_status() -> tuple[bool, str]:
    """Whether a TensorRT plan can be built here, and in plain words why (not).

    Never raises: a broken install is reported as a reason, not a crash.
    """
    if importlib.util.find_spec("tensorrt") is None:
        return False, "tensorrt not installed (it comes with the 'gpu' extra / Dockerfile.gpu)"
    try:
        import torch
    except ImportError:
        return False, "torch is not importable, so no CUDA GPU can be used"
    if not torch.cuda.is_available():
        return False, "no CUDA GPU (torch.cuda.is_available() is false)"
    try:
        import tensorrt as trt
    except Exception as err:  # PyPI's stub packages raise all sorts of errors on import
        return False, f"tensorrt is installed but fails to import: {type(err).__name__}: {err}"
    return True, f"tensorrt {trt.__version__} on {torch.cuda.get_device_name(0)}"


def compute_profiles(
    specs: Sequence[TensorSpec],
    max_batch_size: int,
    preferred_batch_sizes: Sequence[int] = (),
    overrides: Mapping[str, ShapeRange] | None = None,
) -> dict[str, Profile]:
    """min/opt/max shape (batch dim included when batching) for every input.

    The batch dim runs from 1 to ``max_batch_size`` and is tuned (opt) for the largest
    preferred batch size, which is what the dynamic batcher aims to form. Other dynamic
    dims take their range from ``--trt-shape`` overrides; a dynamic dim without one is an
    :class:`InputSpecError` naming the input and dim, since no range can be guessed.
    """
    overrides = overrides or {}
    if max_batch_size > 0:
        opt_batch = max(preferred_batch_sizes) if preferred_batch_sizes else max_batch_size
        if not 1 <= opt_batch <= max_batch_size:
            raise InputSpecError(
                f"preferred batch size {opt_batch} is outside 1..max_batch_size ({max_batch_size})"
            )
        batch: dict[str, list[int]] = {"min": [1], "opt": [opt_batch], "max": [max_batch_size]}
    else:
        batch = {"min": [], "opt": [], "max": []}
    profiles: dict[str, Profile] = {}
    for spec in specs:
        rng = overrides.get(spec.name)
        per: Profile = {k: list(v) for k, v in batch.items()}
        for i, dim in enumerate(spec.dims):
            if rng is not None:
                lo, opt, hi = rng.min[i], rng.opt[i], rng.max[i]
            elif dim == -1:
                raise InputSpecError(
                    f"input {spec.name!r} dim {i} (batch dim excluded) is dynamic (-1), and "
                    "TensorRT needs its range: pass --trt-shape "
                    f"{spec.name}:MIN/OPT/MAX, e.g. --trt-shape {spec.name}:"
                    + "/".join(
                        ",".join(str(s if d == -1 else d) for d in spec.dims) for s in (1, 64, 256)
                    )
                )
            else:
                lo = opt = hi = dim
            per["min"].append(lo)
            per["opt"].append(opt)
            per["max"].append(hi)
        profiles[spec.name] = per
    return profiles


def make_stamp(
    *,
    tensorrt_version: str,
    compute_capability: tuple[int, int],
    gpu_name: str,
    fp16: bool,
    profiles: Mapping[str, Profile],
    bf16: bool = False,
) -> TensorRTStamp:
    """The sidecar stamp for a plan built with these facts."""
    major, minor = compute_capability
    return TensorRTStamp(
        tensorrt_version=tensorrt_version,
        compute_capability=f"{major}.{minor}",
        gpu_name=gpu_name,
        fp16=fp16,
        bf16=bf16,
        profiles={name: {k: list(v) for k, v in p.items()} for name, p in profiles.items()},
    )


def current_stamp_facts() -> tuple[str, tuple[int, int], str]:
    """(tensorrt version, compute capability, GPU name) of this machine's GPU 0."""
    import tensorrt as trt
    import torch

    return trt.__version__, torch.cuda.get_device_capability(0), torch.cuda.get_device_name(0)


def build_plan(
    onnx_path: Path,
    plan_path: Path,
    *,
    model_name: str,
    profiles: Mapping[str, Profile],
    fp16: bool = False,
    bf16: bool = False,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
) -> TensorRTStamp:
    """Build ``plan_path`` from ``onnx_path`` with one optimization profile; return its stamp."""
    import tensorrt as trt

    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    # TensorRT 10 networks are always explicit-batch; the old flag is gone.
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, trt_logger)
    # parse_from_file (not parse(bytes)) so external-data weights next to the file resolve.
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"model {model_name!r}: TensorRT cannot parse the ONNX graph: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if bf16:
        config.set_flag(trt.BuilderFlag.BF16)

    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        name = network.get_input(i).name
        shape = profiles.get(name)
        if shape is None:
            raise ExportError(
                f"model {model_name!r}: the ONNX graph has input {name!r} with no TensorRT profile"
            )
        profile.set_shape(name, shape["min"], shape["opt"], shape["max"])
    config.add_optimization_profile(profile)

    logger.info("model %s: building TensorRT plan (fp16=%s, bf16=%s)", model_name, fp16, bf16)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(
            f"model {model_name!r}: TensorRT failed to build a plan (see the TensorRT log above)"
        )
    plan_path.write_bytes(memoryview(serialized))
    version, capability, gpu = current_stamp_facts()
    return make_stamp(
        tensorrt_version=version,
        compute_capability=capability,
        gpu_name=gpu,
        fp16=fp16,
        bf16=bf16,
        profiles=profiles,
    )


def _torch_dtype(trt_dtype: Any) -> Any:
    import tensorrt as trt
    import torch

    table = {
        trt.float32: torch.float32,
        trt.float16: torch.float16,
        trt.bfloat16: torch.bfloat16,
        trt.int8: torch.int8,
        trt.uint8: torch.uint8,
        trt.int32: torch.int32,
        trt.int64: torch.int64,
        trt.bool: torch.bool,
    }
    try:
        return table[trt_dtype]
    except KeyError:
        raise ExportError(f"TensorRT tensor type {trt_dtype} has no torch equivalent") from None


class TensorRTRunner:
    """Runs a plan on GPU 0 with torch CUDA tensors as I/O buffers (parity checks)."""

    def __init__(self, plan_path: Path, output_names: Sequence[str]) -> None:
        import tensorrt as trt
        import torch

        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
        if self._engine is None:
            raise ExportError(f"TensorRT could not deserialize plan {plan_path}")
        self._context = self._engine.create_execution_context()
        self._stream = torch.cuda.Stream()
        self._outputs = list(output_names)
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._inputs = [
            n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT
        ]

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        keep = []  # buffers must outlive the asynchronous execution
        for name in self._inputs:
            dtype = _torch_dtype(self._engine.get_tensor_dtype(name))
            tensor = torch.from_numpy(np.ascontiguousarray(feeds[name])).to("cuda", dtype)
            self._context.set_input_shape(name, tuple(tensor.shape))
            self._context.set_tensor_address(name, tensor.data_ptr())
            keep.append(tensor)
        results = {}
        for name in self._outputs:
            shape = tuple(self._context.get_tensor_shape(name))
            dtype = _torch_dtype(self._engine.get_tensor_dtype(name))
            out = torch.empty(shape, dtype=dtype, device="cuda")
            self._context.set_tensor_address(name, out.data_ptr())
            results[name] = out
        if not self._context.execute_async_v3(self._stream.cuda_stream):
            raise ExportError("TensorRT execute_async_v3 reported failure")
        self._stream.synchronize()
        return {name: t.cpu().numpy() for name, t in results.items()}
