"""Native TensorRT 10 runtime for ``tensorrt_plan`` models (``model.plan``); GPU only.

A plan is only valid for the TensorRT release and GPU architecture it was built with, so
loading first reads the version's ``rayfront.json`` stamp and refuses a mismatch with a
:class:`~rayfront.errors.PlanMismatchError` that says how to fix it
(:func:`check_plan_compatible`, pure). Each batch picks the optimization profile whose
range holds its shapes (:func:`select_profile`, pure), sets the input shapes, copies the
inputs through pinned host memory on a private CUDA stream, runs ``execute_async_v3`` and
copies the outputs back the same way. Served with dynamic batching, each execution
instance instead runs as a :class:`TrtProgram` on the pinned pipeline
(:mod:`~rayfront.runtimes.device_pipeline`): the plan is enqueued on the pipeline's
compute stream with the addresses of its device buffers, and ``fork`` gives every
instance its own execution context.

Device buffers are torch CUDA tensors (torch's caching allocators make per-call buffers
cheap and keep pinned blocks alive until their asynchronous copies finish). tensorrt and
torch are imported only when a plan is loaded; the pure functions run anywhere.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rayfront.dtypes import to_numpy
from rayfront.errors import (
    InternalError,
    InvalidArgumentError,
    PlanMismatchError,
    RepositoryError,
)
from rayfront.runtimes._common import device_kind, param_bool, where
from rayfront.runtimes.base import Runtime
from rayfront.spec import PLATFORM_TENSORRT, ModelSpec
from rayfront.tensors import TensorDict

logger = logging.getLogger(__name__)

#: One optimization profile: input name -> {"min": shape, "opt": shape, "max": shape}.
Profile = Mapping[str, Mapping[str, Sequence[int]]]

_REEXPORT = "re-export with `rayfront export --tensorrt on` on this host"


class PlanStamp(Protocol):
    """The fields of :class:`rayfront.repository.sidecar.TensorRTStamp` this module reads."""

    tensorrt_version: str
    compute_capability: str
    gpu_name: str


def _release(version: str) -> tuple[str, ...]:
    # Plans are tied to major.minor.patch; a 4th component is a build number.
    return tuple(version.strip().split(".")[:3])


def check_plan_compatible(
    label: str, stamp: PlanStamp | None, host_tensorrt: str, host_capability: str
) -> None:
    """Raise unless a plan stamped ``stamp`` can run with this host's TensorRT and GPU.

    ``label`` names the model version in the message (``model 'x' version 2``). A plan
    without a stamp cannot be checked and is refused too (see ``allow_unstamped_plan``).
    """
    if stamp is None:
        raise PlanMismatchError(
            f"{label}: the plan has no TensorRT stamp in rayfront.json, so nothing says which "
            f"TensorRT version and GPU it was built for; {_REEXPORT}, or set parameter "
            "allow_unstamped_plan=true to try it anyway"
        )
    same_trt = _release(stamp.tensorrt_version) == _release(host_tensorrt)
    same_gpu = stamp.compute_capability.strip() == host_capability.strip()
    if same_trt and same_gpu:
        return
    built_on = f" ({stamp.gpu_name})" if stamp.gpu_name else ""
    raise PlanMismatchError(
        f"{label}: plan built with TensorRT {stamp.tensorrt_version} for compute capability "
        f"{stamp.compute_capability}{built_on}; this host has TensorRT {host_tensorrt} on "
        f"compute capability {host_capability} — {_REEXPORT}"
    )


def _fits(shape: Sequence[int], lo: Sequence[int], hi: Sequence[int]) -> bool:
    return len(shape) == len(lo) == len(hi) and all(
        a <= s <= b for s, a, b in zip(shape, lo, hi, strict=True)
    )


def select_profile(
    profiles: Sequence[Profile], shapes: Mapping[str, Sequence[int]], *, model: str = ""
) -> int:
    """Index of the profile to run ``shapes`` with.

    Among the profiles whose min..max range holds every input shape, the one whose opt
    shapes are closest (TensorRT tuned its kernels for opt); ties go to the lower index.
    Raises InvalidArgumentError naming the input and the ranges when none fits.
    """
    best: tuple[int, int] | None = None
    for index, profile in enumerate(profiles):
        distance = 0
        for name, shape in shapes.items():
            rng = profile.get(name)
            if rng is None or not _fits(shape, rng["min"], rng["max"]):
                break
            distance += sum(abs(s - o) for s, o in zip(shape, rng["opt"], strict=True))
        else:
            if best is None or distance < best[0]:
                best = (distance, index)
    if best is not None:
        return best[1]
    for name, shape in shapes.items():
        ranges = [f"{list(p[name]['min'])}..{list(p[name]['max'])}" for p in profiles if name in p]
        if not any(_fits(shape, p[name]["min"], p[name]["max"]) for p in profiles if name in p):
            raise InvalidArgumentError(
                f"input {name!r} of model {model!r}: shape {list(shape)} is outside every "
                f"TensorRT optimization profile ({'; '.join(ranges) or 'none for this input'})"
            )
    raise InvalidArgumentError(
        f"model {model!r}: input shapes { ({n: list(s) for n, s in shapes.items()}) } fit no "
        "single TensorRT optimization profile together"
    )


def _torch_dtype(torch: Any, dtype: np.dtype) -> Any:
    return torch.from_numpy(np.empty(0, dtype=dtype)).dtype


class TensorRTRuntime(Runtime):
    """A deserialized TensorRT engine with one execution context and one CUDA stream."""

    platforms = (PLATFORM_TENSORRT,)
    backends = ("tensorrt",)

    def __init__(
        self,
        spec: ModelSpec,
        version_dir: Path,
        *,
        trt: Any,
        runtime: Any,
        engine: Any,
        device: Any,
        host_facts: tuple[str, str, str],
    ) -> None:
        import torch

        super().__init__(spec, version_dir)
        self._torch = torch
        self._trt = trt
        self._runtime = runtime  # the engine must not outlive the runtime that made it
        self._engine = engine
        self._device = device
        self._context = engine.create_execution_context()
        if self._context is None:
            raise RepositoryError(
                f"{where(spec, version_dir)}: TensorRT could not create an execution context "
                "(out of GPU memory?)"
            )
        self._stream = torch.cuda.Stream(device=device)
        self._lock = threading.Lock()  # one context: executions must not interleave
        self._host_facts = host_facts
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        # Every engine output needs an address, including ones the config does not list.
        self._outputs = [n for n in names if n not in self._inputs]
        self._dtypes: dict[str, np.dtype] = {}
        for n in names:
            try:
                self._dtypes[n] = np.dtype(trt.nptype(engine.get_tensor_dtype(n)))
            except TypeError:  # e.g. bfloat16 / FP8 I/O: no numpy equivalent
                raise RepositoryError(
                    f"{where(spec, version_dir)}: plan tensor {n!r} has type "
                    f"{engine.get_tensor_dtype(n)}, which has no KServe/numpy equivalent"
                ) from None
        self._torch_dtypes = {n: _torch_dtype(torch, d) for n, d in self._dtypes.items()}
        self._profiles: list[dict[str, dict[str, list[int]]]] = [
            {
                name: dict(
                    zip(
                        ("min", "opt", "max"),
                        (list(s) for s in engine.get_tensor_profile_shape(name, index)),
                        strict=True,
                    )
                )
                for name in self._inputs
            }
            for index in range(engine.num_optimization_profiles)
        ]
        self._active_profile = 0

    @classmethod
    def load(cls, spec: ModelSpec, version_dir: Path, device_index: int = 0) -> TensorRTRuntime:
        version_dir = Path(version_dir)
        label = where(spec, version_dir)
        if device_kind(spec, gpu_available=True) != "GPU":
            raise RepositoryError(
                f"{label}: TensorRT plans run only on a GPU; set instance_group kind KIND_GPU"
            )
        try:
            import tensorrt as trt
        except ImportError:
            raise RepositoryError(
                f"{label}: the tensorrt package is not installed here (it comes with the 'gpu' "
                "extra / Dockerfile.gpu); serve the ONNX version instead"
            ) from None
        import torch

        if not torch.cuda.is_available():
            raise RepositoryError(f"{label}: TensorRT plans need a CUDA GPU and this host has none")
        # Ray numbers the GPUs it gave this replica from 0.
        device = torch.device("cuda", device_index)
        major, minor = torch.cuda.get_device_capability(device)
        host = (str(trt.__version__), f"{major}.{minor}", torch.cuda.get_device_name(device))

        from rayfront.repository.sidecar import read_sidecar

        provenance = read_sidecar(version_dir)
        stamp = provenance.tensorrt if provenance is not None else None
        if stamp is None and param_bool(spec, "allow_unstamped_plan", False):
            logger.warning("%s: unstamped TensorRT plan; loading it as configured", label)
        else:
            check_plan_compatible(label, stamp, host[0], host[1])

        path = version_dir / spec.model_filename
        trt_logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(trt_logger)
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise RepositoryError(
                f"{label}: TensorRT could not deserialize {path.name} (see the TensorRT log); "
                f"{_REEXPORT}"
            )
        loaded = cls(
            spec,
            version_dir,
            trt=trt,
            runtime=runtime,
            engine=engine,
            device=device,
            host_facts=host,
        )
        loaded._check_signature(label)
        logger.info(
            "%s: loaded %s (TensorRT %s on %s, %d profile(s))",
            label,
            path.name,
            host[0],
            host[2],
            len(loaded._profiles),
        )
        return loaded

    def _check_signature(self, label: str) -> None:
        problems = []
        for kind, tensors, names in (
            ("input", self.spec.inputs, self._inputs),
            ("output", self.spec.outputs, self._outputs),
        ):
            for t in tensors:
                if t.name not in names:
                    problems.append(f"{kind} {t.name!r} is not in the plan ({', '.join(names)})")
                    continue
                if t.datatype == "BYTES" or self._dtypes[t.name] != to_numpy(t.datatype):
                    problems.append(
                        f"{kind} {t.name!r}: config dtype {t.datatype}, plan {self._dtypes[t.name]}"
                    )
        declared = {t.name for t in self.spec.inputs}
        problems += [
            f"plan input {n!r} is not in config.pbtxt" for n in self._inputs if n not in declared
        ]
        if problems:
            raise RepositoryError(
                f"{label}: model.plan does not match config.pbtxt: " + "; ".join(problems)
            )

    def _enqueue(self, device_inputs: dict[str, Any], stream: int) -> dict[str, Any]:
        """Bind device inputs and fresh device outputs, enqueue the plan on ``stream``.

        The one place the context is driven, for :meth:`infer` and for the pipeline's
        :class:`TrtProgram`; the caller holds the context (``_lock`` or its own instance).
        """
        torch = self._torch
        missing = [n for n in self._inputs if n not in device_inputs]
        if missing:
            raise InvalidArgumentError(
                f"model {self.spec.name!r}: missing input(s) {', '.join(map(repr, missing))}"
            )
        shapes = {n: tuple(device_inputs[n].shape) for n in self._inputs}
        profile = select_profile(self._profiles, shapes, model=self.spec.name)
        if profile != self._active_profile:
            if not self._context.set_optimization_profile_async(profile, stream):
                raise InternalError(
                    f"model {self.spec.name!r}: TensorRT refused optimization profile {profile}"
                )
            self._active_profile = profile
        for name in self._inputs:
            tensor = device_inputs[name]
            if not self._context.set_input_shape(name, shapes[name]):
                raise InvalidArgumentError(
                    f"input {name!r} of model {self.spec.name!r}: TensorRT rejected shape "
                    f"{list(shapes[name])}"
                )
            self._context.set_tensor_address(name, tensor.data_ptr())
        outputs: dict[str, Any] = {}
        for name in self._outputs:
            shape = tuple(self._context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise InternalError(
                    f"model {self.spec.name!r}: output {name!r} has a data-dependent shape "
                    f"{list(shape)}, which this runtime does not support"
                )
            out = torch.empty(shape, dtype=self._torch_dtypes[name], device=self._device)
            self._context.set_tensor_address(name, out.data_ptr())
            outputs[name] = out
        if not self._context.execute_async_v3(stream):
            raise InternalError(
                f"model {self.spec.name!r}: TensorRT execute_async_v3 reported failure"
            )
        # Only the declared outputs go back to clients (every one needed an address).
        return {t.name: outputs[t.name] for t in self.spec.outputs}

    def infer(self, inputs: TensorDict) -> TensorDict:
        torch = self._torch
        missing = [n for n in self._inputs if n not in inputs]
        if missing:
            raise InvalidArgumentError(
                f"model {self.spec.name!r}: missing input(s) {', '.join(map(repr, missing))}"
            )
        with self._lock, torch.cuda.stream(self._stream):
            keep = []  # buffers must live until the stream has finished with them
            device_inputs: dict[str, Any] = {}
            for name in self._inputs:
                arr = inputs[name]
                dtype = self._torch_dtypes[name]
                pinned = torch.empty(arr.shape, dtype=dtype, pin_memory=True)
                # One host copy straight into pinned memory (converting dtype if needed);
                # also avoids torch.from_numpy on read-only arrays, which Ray hands out.
                pinned.numpy()[...] = arr
                device = torch.empty(arr.shape, dtype=dtype, device=self._device)
                device.copy_(pinned, non_blocking=True)
                device_inputs[name] = device
                keep.append(pinned)
            outputs = self._enqueue(device_inputs, self._stream.cuda_stream)
            results: dict[str, np.ndarray] = {}
            for name, out in outputs.items():
                pinned = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
                pinned.copy_(out, non_blocking=True)
                keep.append(pinned)
                results[name] = pinned.numpy()
            self._stream.synchronize()
            del keep, device_inputs, outputs
        return results

    def device_program(self) -> tuple[TrtProgram, str] | None:
        """This instance's context on the pinned pipeline (its compute stream)."""
        if self.spec.max_batch_size < 1:
            return None
        return TrtProgram(self), str(self._device)

    def fork(self) -> TensorRTRuntime:
        """Another execution instance: the same engine, its own context (a context holds
        one batch's activations, so instances must not share one)."""
        return type(self)(
            self.spec,
            self.version_dir,
            trt=self._trt,
            runtime=self._runtime,
            engine=self._engine,
            device=self._device,
            host_facts=self._host_facts,
        )

    def describe(self) -> dict[str, str]:
        trt_version, capability, gpu = self._host_facts
        return {
            "runtime": "tensorrt",
            "tensorrt": trt_version,
            "device": f"GPU ({gpu}, compute capability {capability})",
            "profiles": str(len(self._profiles)),
        }

    def close(self) -> None:
        # Release in dependency order: context, then engine, then runtime.
        self._context = None
        self._engine = None
        self._runtime = None


class TrtProgram:
    """A plan's execution context as a :class:`~rayfront.runtimes.device_pipeline.DeviceProgram`.

    The pipeline calls ``forward`` on its launcher thread inside its compute stream, after
    the batch's copy-in event: the plan is enqueued on that same stream, so it starts
    once the inputs have landed and the pipeline's D2H copy waits for it, with no host
    synchronisation. One launcher per instance drives the context, so no lock is needed.
    """

    def __init__(self, runtime: TensorRTRuntime) -> None:
        self.runtime = runtime

    def forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        torch = self.runtime._torch
        stream = torch.cuda.current_stream(self.runtime._device).cuda_stream
        return self.runtime._enqueue(inputs, stream)
