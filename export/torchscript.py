"""TorchScript ``model.pt`` for Triton's ``pytorch_libtorch`` platform (``--torchscript``).

The model is traced (not scripted: tracing handles arbitrary Python models, and the parity
check at several batch and dynamic sizes catches a trace that baked a shape in) behind a
small wrapper that flattens its outputs into a tuple, because libtorch backends expect
tensors or a tuple of tensors back.

Names: the config keeps the same input and output names as the ONNX model. Stock Triton's
PyTorch backend maps names that follow neither forward-argument names nor ``NAME__i`` by
their order in the config, so the config lists inputs in ``forward`` argument order and
outputs in return order, and the ``rayfront_input_order`` / ``rayfront_output_order``
parameters record that order explicitly for rayfront's own runtime.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rayfront.errors import ExportError
from rayfront.export.onnx_export import summarize_exception
from rayfront.export.parity import Runner, flatten_outputs

# Read by rayfront's libtorch runtime; stock Triton ignores unknown parameters (FP32).
from rayfront.runtimes.libtorch import PRECISION_PARAM

logger = logging.getLogger(__name__)

__all__ = ["PRECISION_PARAM", "export_torchscript", "order_parameters", "torchscript_runner"]

INPUT_ORDER_PARAM = "rayfront_input_order"
OUTPUT_ORDER_PARAM = "rayfront_output_order"


def order_parameters(input_names: Sequence[str], output_names: Sequence[str]) -> dict[str, str]:
    """config.pbtxt ``parameters`` recording positional order of the TorchScript I/O."""
    return {INPUT_ORDER_PARAM: ",".join(input_names), OUTPUT_ORDER_PARAM: ",".join(output_names)}


def export_torchscript(
    module: Any, example_args: tuple[Any, ...], path: Path, *, model_name: str
) -> Path:
    """Trace ``module`` on ``example_args`` and save it to ``path``."""
    import torch

    class _FlatOutputs(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return tuple(flatten_outputs(self.inner(*args), model_name=model_name))

    try:
        # torch.jit is deprecated in favour of torch.export, but Triton's libtorch backend
        # loads TorchScript only; the warnings would just be noise here.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            traced = torch.jit.trace(
                _FlatOutputs(module).eval(), example_args, check_trace=False, strict=False
            )
        traced.save(str(path))
    except Exception as err:  # tracer failures come in many types; one line for the user
        raise ExportError(
            f"cannot trace model {model_name!r} to TorchScript: {summarize_exception(err)}"
        ) from err
    logger.info("traced %s to TorchScript %s", model_name, path)
    return path


def torchscript_runner(
    path: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    *,
    device: str = "cpu",
    precision: str = "fp32",
) -> Runner:
    """A runner over the saved TorchScript file, loaded as the serving runtime loads it.

    With ``precision`` fp16/bf16 the weights and floating inputs are cast as
    ``TorchScriptRuntime`` casts them, and floating outputs come back as FP32, so the
    parity check measures the model the GPU will serve.
    """
    import torch

    compute = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(path), map_location=device).eval()
    if compute is not None:
        module = module.to(compute)

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t.to(compute) if compute is not None and t.is_floating_point() else t

    def back(t: torch.Tensor) -> np.ndarray:
        if compute is not None and t.dtype == compute:
            t = t.float()
        return t.cpu().numpy()

    def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [
            cast(torch.from_numpy(np.ascontiguousarray(feeds[n])).to(device)) for n in input_names
        ]
        with torch.no_grad():
            out = module(*args)
        flat = list(out) if isinstance(out, tuple | list) else [out]
        return {n: back(t) for n, t in zip(output_names, flat, strict=True)}

    return run
