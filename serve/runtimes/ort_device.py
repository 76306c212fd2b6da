"""ONNX Runtime on the pinned GPU pipeline: IO binding on the pipeline's device tensors.

:class:`OrtProgram` is a :class:`~rayfront.runtimes.device_pipeline.DeviceProgram`: the
pipeline has already copied the batch into its device buffers (torch tensors, on its H2D
stream), and ORT reads them in place and writes its outputs into device tensors the
program allocates, so a batch crosses PCIe once each way, asynchronously, instead of
``session.run``'s pageable copies in and out on every call.

ORT computes on its own CUDA stream, not on the pipeline's compute stream, so ``forward``
first waits for the current (compute) stream, which is already ordered after the batch's
copy-in; ``run_with_iobinding`` synchronises ORT's stream before it returns, so the
outputs are complete when the pipeline records its compute event after ``forward``.

Outputs whose dims are all fixed are preallocated with torch and bound by address; an
output with a variable dim is left to ORT's allocator and moved into a torch tensor.
The same code binds host tensors (``device_type="cpu"``), which is how CI tests it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from rayfront.dtypes import to_numpy, to_torch

if TYPE_CHECKING:
    from rayfront.runtimes.onnxruntime import OnnxRuntime


class OrtProgram:
    """An :class:`OnnxRuntime` session as a function of device tensors (IO binding)."""

    def __init__(self, runtime: OnnxRuntime, device_type: str, device_id: int = 0) -> None:
        import torch

        if device_type not in ("cuda", "cpu"):
            raise ValueError(f"device_type must be 'cuda' or 'cpu', got {device_type!r}")
        self._torch = torch
        self.runtime = runtime
        self.device_type = device_type
        self.device_id = device_id
        self.device = torch.device(f"cuda:{device_id}" if device_type == "cuda" else "cpu")
        spec = runtime.spec
        self._in_dtypes = {t.name: to_numpy(t.datatype) for t in spec.inputs}
        self._outputs = [t.name for t in spec.outputs]
        self._out_np = {t.name: to_numpy(t.datatype) for t in spec.outputs}
        self._out_torch = {t.name: to_torch(t.datatype) for t in spec.outputs}
        # Per-row dims when every one is fixed: such outputs are preallocated and bound.
        self._out_dims = {
            t.name: tuple(t.dims) if all(d >= 0 for d in t.dims) else None for t in spec.outputs
        }

    def forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        torch = self._torch
        self.runtime.check_inputs(inputs)
        rows = int(next(iter(inputs.values())).shape[0])
        binding = self.runtime.session.io_binding()
        for name, tensor in inputs.items():
            tensor = tensor.contiguous()
            binding.bind_input(
                name,
                self.device_type,
                self.device_id,
                self._in_dtypes[name].type,
                tuple(tensor.shape),
                tensor.data_ptr(),
            )
        bound: dict[str, Any] = {}
        for name in self._outputs:
            dims = self._out_dims[name]
            if dims is None:
                binding.bind_output(name, self.device_type, self.device_id)
                continue
            out = torch.empty((rows, *dims), dtype=self._out_torch[name], device=self.device)
            binding.bind_output(
                name,
                self.device_type,
                self.device_id,
                self._out_np[name].type,
                tuple(out.shape),
                out.data_ptr(),
            )
            bound[name] = out
        if self.device_type == "cuda":
            # ORT launches on its own stream: the batch's copy-in (ordered before the
            # current stream's work) must have landed before ORT reads the buffers.
            torch.cuda.current_stream(self.device).synchronize()
        self.runtime.run_guarded(lambda: self.runtime.session.run_with_iobinding(binding))
        if len(bound) == len(self._outputs):
            return bound
        # A variable-size output lives in ORT's memory: one copy out, one into torch's.
        host = binding.copy_outputs_to_cpu()
        for name, arr in zip(self._outputs, host, strict=True):
            if name not in bound:
                bound[name] = torch.from_numpy(np.ascontiguousarray(arr)).to(self.device)
        return {name: bound[name] for name in self._outputs}
