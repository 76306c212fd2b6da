"""``rayfront.export``: PyTorch models into a Triton model repository.

:func:`export_model` runs the whole pipeline (load, ONNX, parity, TensorRT where available,
optional TorchScript, atomic repository write) for an :class:`ExportRequest`. Submodules do
one thing each: ``specs`` (CLI tensor specs), ``loader``, ``onnx_export``, ``parity``,
``tensorrt``, ``torchscript``, ``pipeline``, ``cli``; ``demos`` holds the demo models.
Importing this package does not import torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ExportRequest", "ExportResult", "export_model"]


def __getattr__(name: str) -> Any:
    # Lazy so `import rayfront.export.export_cli` (and `rayfront --help`) stays light.
    if name in __all__:
        from rayfront.export import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'rayfront.export' has no attribute {name!r}")
