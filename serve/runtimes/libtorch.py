"""TorchScript runtime for ``pytorch_libtorch`` models (``model.pt``).

For models ONNX cannot express, and the GPU path the lent GPU machines can verify. The
module is called positionally, so config names map to ``forward`` arguments and to the
returned tuple by order, decided as follows (:func:`tensor_order`, pure):

1. the ``rayfront_input_order`` / ``rayfront_output_order`` parameters that
   ``rayfront export --torchscript`` writes (comma-separated names);
2. else, when every name follows Triton's ``NAME__<index>`` convention, that index;
3. else the order of the config.

A module returning a dict is matched by name instead. The device comes from the
instance group (KIND_GPU: a GPU Ray gave the replica). On a GPU the runtime offers a
:class:`TorchProgram` to the pinned, pipelined data path, and computes in the precision
the ``rayfront.precision`` parameter names (``fp32``, ``fp16``, ``bf16``; written by
``rayfront export --precision``): clients keep sending and receiving the config's
datatypes, the casts happen on the device. torch is imported only when a model is
loaded, so serving processes without TorchScript models never import it.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rayfront.dtypes import to_numpy, to_torch
from rayfront.errors import InternalError, InvalidArgumentError, RepositoryError
from rayfront.runtimes._common import (
    device_kind,
    param_bool,
    param_choice,
    param_int,
    short_error,
    where,
)
from rayfront.runtimes.base import Runtime
from rayfront.spec import PLATFORM_TORCHSCRIPT, ModelSpec, TensorSpec
from rayfront.tensors import TensorDict

logger = logging.getLogger(__name__)

INPUT_ORDER_PARAM = "rayfront_input_order"
OUTPUT_ORDER_PARAM = "rayfront_output_order"
PRECISION_PARAM = "rayfront.precision"
PRECISIONS = ("fp32", "fp16", "bf16")

_INDEXED = re.compile(r"^.+__(\d+)$")


def tensor_order(spec: ModelSpec, tensors: Sequence[TensorSpec], param: str) -> list[str]:
    """Names of ``tensors`` in positional order (see the module docstring for the rules)."""
    names = [t.name for t in tensors]
    raw = spec.parameters.get(param, "").strip()
    if raw:
        order = [n.strip() for n in raw.split(",") if n.strip()]
        if sorted(order) != sorted(names):
            raise RepositoryError(
                f"model {spec.name!r}: parameter {param!r} lists {order}, but the config "
                f"declares {names}; they must name the same tensors"
            )
        return order
    matches = [_INDEXED.match(n) for n in names]
    if names and all(matches):
        indices = [int(m.group(1)) for m in matches if m]
        if sorted(indices) == list(range(len(names))):
            return [n for _, n in sorted(zip(indices, names, strict=True))]
    return names


def torch_device(spec: ModelSpec, *, cuda_available: bool, index: int = 0) -> str:
    """``cuda:<index>`` or ``cpu`` for the instance group; KIND_GPU without CUDA is refused."""
    if device_kind(spec, gpu_available=cuda_available) == "CPU":
        return "cpu"
    if cuda_available:
        return f"cuda:{index}"
    if param_bool(spec, "allow_cpu_fallback", False):
        logger.warning("model %s: KIND_GPU but no CUDA; running on CPU as allowed", spec.name)
        return "cpu"
    raise RepositoryError(
        f"model {spec.name!r}: instance_group KIND_GPU needs CUDA, but torch.cuda.is_available() "
        "is false here; use instance_group kind KIND_CPU or set parameter allow_cpu_fallback=true"
    )


def torch_error(exc: BaseException) -> str:
    """One line for a TorchScript failure: the final error, never the interpreter traceback."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1 and any(line.startswith("Traceback of TorchScript") for line in lines):
        last = lines[-1]
        return short_error(RuntimeError(last.split(": ", 1)[1] if ": " in last else last))
    return short_error(exc)


class TorchProgram:
    """The module as a function of device tensors, in its compute precision."""

    def __init__(
        self,
        module: Any,
        input_order: list[str],
        output_order: list[str],
        declared_outputs: list[str],
        output_dtypes: dict[str, Any],
        compute_dtype: Any,
    ) -> None:
        self.module = module
        self.input_order = input_order
        self.output_order = output_order
        self.declared_outputs = declared_outputs
        self.output_dtypes = output_dtypes
        self.compute_dtype = compute_dtype

    def _cast(self, tensor: Any) -> Any:
        if self.compute_dtype is not None and tensor.is_floating_point():
            return tensor.to(self.compute_dtype)
        return tensor

    def forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        args = [self._cast(inputs[n]) if n in inputs else None for n in self.input_order]
        out = self.module(*args)
        if isinstance(out, dict):
            named = {n: out[n] for n in self.declared_outputs}
        else:
            flat = list(out) if isinstance(out, tuple | list) else [out]
            named = dict(zip(self.output_order, flat, strict=True))
        return {
            n: v if v.dtype == self.output_dtypes[n] else v.to(self.output_dtypes[n])
            for n, v in named.items()
        }


class TorchScriptRuntime(Runtime):
    """A ``torch.jit`` module on one device, run under ``torch.inference_mode``."""

    platforms = (PLATFORM_TORCHSCRIPT,)
    backends = ("pytorch",)

    def __init__(
        self, spec: ModelSpec, version_dir: Path, module: Any, device: str, precision: str = "fp32"
    ) -> None:
        import torch

        super().__init__(spec, version_dir)
        self._torch = torch
        self._module = module
        self._device = torch.device(device)
        self.precision = precision
        self._compute_dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[
            precision
        ]
        self._inputs = tensor_order(spec, spec.inputs, INPUT_ORDER_PARAM)
        self._outputs = tensor_order(spec, spec.outputs, OUTPUT_ORDER_PARAM)
        self._optional = {t.name for t in spec.inputs if t.optional}
        self._dtypes = {t.name: to_numpy(t.datatype) for t in spec.inputs}
        self._declared_outputs = [t.name for t in spec.outputs]
        self._output_dtypes = {t.name: to_numpy(t.datatype) for t in spec.outputs}
        self._program = TorchProgram(
            module,
            self._inputs,
            self._outputs,
            self._declared_outputs,
            {t.name: to_torch(t.datatype) for t in spec.outputs},
            self._compute_dtype,
        )

    @classmethod
    def load(cls, spec: ModelSpec, version_dir: Path, device_index: int = 0) -> TorchScriptRuntime:
        import torch

        version_dir = Path(version_dir)
        label = where(spec, version_dir)
        precision = param_choice(spec, PRECISION_PARAM, PRECISIONS, "fp32")
        bytes_tensors = [t.name for t in (*spec.inputs, *spec.outputs) if t.datatype == "BYTES"]
        if bytes_tensors:
            raise RepositoryError(
                f"{label}: BYTES tensors {bytes_tensors} have no torch dtype; "
                "pytorch_libtorch models need numeric inputs and outputs"
            )
        device = torch_device(spec, cuda_available=torch.cuda.is_available(), index=device_index)
        if precision != "fp32" and device == "cpu":
            logger.warning(
                "%s: %s applies on a GPU; computing in fp32 on the CPU", label, precision
            )
            precision = "fp32"
        threads = param_int(spec, "intra_op_thread_count", 0)
        if threads:
            # Process-wide in torch; a replica serves one model version, so that is fine.
            torch.set_num_threads(threads)
        path = version_dir / spec.model_filename
        try:
            with warnings.catch_warnings():
                # torch marks torch.jit deprecated; pytorch_libtorch models are TorchScript
                # by definition, so the warning tells an operator nothing actionable.
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(str(path), map_location=device)
        except (RuntimeError, ValueError, OSError) as exc:
            raise RepositoryError(
                f"{label}: torch.jit.load cannot load {path.name}: {short_error(exc)}"
            ) from None
        module.eval()
        if precision == "fp16":
            module = module.half()
        elif precision == "bf16":
            module = module.bfloat16()
        if param_bool(spec, "freeze", False):
            module = torch.jit.freeze(module)
        if device != "cpu":
            # Fixed shapes per batch size (warmed up before ready): let cuDNN pick kernels.
            torch.backends.cudnn.benchmark = param_bool(spec, "cudnn_benchmark", True)
        runtime = cls(spec, version_dir, module, device, precision)
        logger.info("%s: loaded %s on %s (%s)", label, path.name, device, precision)
        return runtime

    def device_program(self) -> tuple[TorchProgram, str] | None:
        if self._device.type == "cpu":
            return None
        return self._program, str(self._device)

    def _tensor(self, name: str, arr: np.ndarray) -> Any:
        arr = np.ascontiguousarray(arr, dtype=self._dtypes[name])
        if not arr.flags.writeable:
            # torch.from_numpy warns on read-only arrays (Ray hands those out); copy instead.
            arr = arr.copy()
        tensor = self._torch.from_numpy(arr)
        if self._device.type != "cpu":
            tensor = tensor.to(self._device, non_blocking=True)
        return tensor

    def infer(self, inputs: TensorDict) -> TensorDict:
        torch = self._torch
        unknown = [n for n in inputs if n not in self._dtypes]
        if unknown:
            raise InvalidArgumentError(
                f"model {self.spec.name!r} has no input(s) {', '.join(map(repr, unknown))}; "
                f"expected {', '.join(self._inputs)}"
            )
        with torch.inference_mode():
            args = []
            for name in self._inputs:
                arr = inputs.get(name)
                if arr is None:
                    if name not in self._optional:
                        raise InvalidArgumentError(
                            f"model {self.spec.name!r}: missing required input {name!r}"
                        )
                    args.append(None)
                else:
                    args.append(self._tensor(name, arr))
            try:
                out = self._module(
                    *[self._program._cast(a) if a is not None else None for a in args]
                )
            except RuntimeError as exc:  # torch.jit.Error and CUDA errors are RuntimeErrors
                raise InternalError(
                    f"model {self.spec.name!r}: TorchScript forward failed: {torch_error(exc)}"
                ) from None
            return self._name_outputs(out)

    def _name_outputs(self, out: Any) -> TensorDict:
        torch = self._torch
        if isinstance(out, dict):
            missing = [n for n in self._declared_outputs if n not in out]
            if missing:
                raise InternalError(
                    f"model {self.spec.name!r}: forward returned a dict without {missing}"
                )
            named = {n: out[n] for n in self._declared_outputs}
        else:
            flat = list(out) if isinstance(out, tuple | list) else [out]
            if len(flat) != len(self._outputs):
                raise InternalError(
                    f"model {self.spec.name!r}: forward returned {len(flat)} tensor(s), the "
                    f"config declares {len(self._outputs)} output(s) ({', '.join(self._outputs)})"
                )
            named = dict(zip(self._outputs, flat, strict=True))
        results: TensorDict = {}
        for name in self._declared_outputs:
            value = named[name]
            if not isinstance(value, torch.Tensor):
                raise InternalError(
                    f"model {self.spec.name!r}: output {name!r} is a {type(value).__name__}, "
                    "not a tensor"
                )
            if value.dtype != self._program.output_dtypes[name]:
                value = value.to(self._program.output_dtypes[name])
            arr = value.detach().cpu().numpy()
            if arr.dtype != self._output_dtypes[name]:
                raise InternalError(
                    f"model {self.spec.name!r}: output {name!r} came back as {arr.dtype}, the "
                    f"config declares {self._output_dtypes[name]}"
                )
            results[name] = arr
        return results

    def describe(self) -> dict[str, str]:
        return {
            "runtime": "torchscript",
            "torch": str(self._torch.__version__),
            "device": str(self._device),
            "precision": self.precision,
            "input_order": ",".join(self._inputs),
            "output_order": ",".join(self._outputs),
        }

    def close(self) -> None:
        self._module = None
