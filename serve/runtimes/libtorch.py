"""TorchScript runtime for ``pytorch_libtorch`` models (``model.pt``).

For models ONNX cannot express, and the GPU path the lent GPU machines can verify. The
module is called positionally, so config names map to ``forward`` arguments and to the
returned tuple by order, decided as follows (:func:`tensor_order`, pure):

1. the ``rayfront_input_order`` / ``rayfront_output_order`` parameters that
   ``rayfront export --torchscript`` writes (comma-separated names);
2. else, when every name follows Triton's ``NAME__<index>`` convention, that index;
3. else the order of the config.

A module returning a dict is matched by name instead. The device comes from the
instance group (KIND_GPU: ``cuda:0``, the replica's only visible GPU under Ray). torch is
imported only when a model is loaded, so serving processes without TorchScript models
never import it.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rayfront.dtypes import to_numpy
from rayfront.errors import InternalError, InvalidArgumentError, RepositoryError
from rayfront.runtimes._common import device_kind, param_bool, param_int, short_error, where
from rayfront.runtimes.base import Runtime
from rayfront.spec import PLATFORM_TORCHSCRIPT, ModelSpec, TensorSpec
from rayfront.tensors import TensorDict

logger = logging.getLogger(__name__)

INPUT_ORDER_PARAM = "rayfront_input_order"
OUTPUT_ORDER_PARAM = "rayfront_output_order"

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


def torch_device(spec: ModelSpec, *, cuda_available: bool) -> str:
    """``cuda:0`` or ``cpu`` for the instance group; KIND_GPU without CUDA is refused."""
    if device_kind(spec, gpu_available=cuda_available) == "CPU":
        return "cpu"
    if cuda_available:
        return "cuda:0"
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


class TorchScriptRuntime(Runtime):
    """A ``torch.jit`` module on one device, run under ``torch.inference_mode``."""

    platforms = (PLATFORM_TORCHSCRIPT,)
    backends = ("pytorch",)

    def __init__(self, spec: ModelSpec, version_dir: Path, module: Any, device: str) -> None:
        import torch

        super().__init__(spec, version_dir)
        self._torch = torch
        self._module = module
        self._device = torch.device(device)
        self._inputs = tensor_order(spec, spec.inputs, INPUT_ORDER_PARAM)
        self._outputs = tensor_order(spec, spec.outputs, OUTPUT_ORDER_PARAM)
        self._optional = {t.name for t in spec.inputs if t.optional}
        self._dtypes = {t.name: to_numpy(t.datatype) for t in spec.inputs}
        self._declared_outputs = [t.name for t in spec.outputs]
        self._output_dtypes = {t.name: to_numpy(t.datatype) for t in spec.outputs}

    @classmethod
    def load(cls, spec: ModelSpec, version_dir: Path) -> TorchScriptRuntime:
        import torch

        version_dir = Path(version_dir)
        label = where(spec, version_dir)
        bytes_tensors = [t.name for t in (*spec.inputs, *spec.outputs) if t.datatype == "BYTES"]
        if bytes_tensors:
            raise RepositoryError(
                f"{label}: BYTES tensors {bytes_tensors} have no torch dtype; "
                "pytorch_libtorch models need numeric inputs and outputs"
            )
        device = torch_device(spec, cuda_available=torch.cuda.is_available())
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
        if param_bool(spec, "freeze", False):
            module = torch.jit.freeze(module)
        runtime = cls(spec, version_dir, module, device)
        logger.info("%s: loaded %s on %s", label, path.name, device)
        return runtime

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
                out = self._module(*args)
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
            "input_order": ",".join(self._inputs),
            "output_order": ",".join(self._outputs),
        }

    def close(self) -> None:
        self._module = None
