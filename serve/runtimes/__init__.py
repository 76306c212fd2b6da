"""Runtimes: one loaded model version each, chosen by the config's platform or backend.

``RUNTIMES`` is the table (Triton platform/backend name -> :class:`Runtime` subclass),
built from each class's ``platforms``/``backends``. Importing this package imports no
framework: onnxruntime, tensorrt and torch load only with a model that needs them.
"""

from __future__ import annotations

import logging
from pathlib import Path

from rayfront.errors import RepositoryError
from rayfront.runtimes.base import Runtime
from rayfront.runtimes.libtorch import TorchScriptRuntime
from rayfront.runtimes.onnxruntime import OnnxRuntime
from rayfront.runtimes.tensorrt_plan import TensorRTRuntime
from rayfront.spec import ModelSpec
from rayfront.tensors import TensorDict

logger = logging.getLogger(__name__)

RUNTIME_CLASSES: tuple[type[Runtime], ...] = (OnnxRuntime, TensorRTRuntime, TorchScriptRuntime)

#: Triton platform or backend name -> runtime class.
RUNTIMES: dict[str, type[Runtime]] = {
    name: cls for cls in RUNTIME_CLASSES for name in (*cls.platforms, *cls.backends)
}


def runtime_class_for(spec: ModelSpec) -> type[Runtime]:
    """The runtime for ``spec``: by ``platform``, else by ``backend``."""
    for key in (spec.platform, spec.backend):
        if key and key in RUNTIMES:
            return RUNTIMES[key]
    platforms = sorted(p for cls in RUNTIME_CLASSES for p in cls.platforms)
    backends = sorted(b for cls in RUNTIME_CLASSES for b in cls.backends)
    raise RepositoryError(
        f"model {spec.name!r}: no runtime for platform {spec.platform!r}"
        + (f" / backend {spec.backend!r}" if spec.backend else "")
        + f"; rayfront serves platforms {', '.join(platforms)} (backends {', '.join(backends)})"
    )


def load_runtime(spec: ModelSpec, version_dir: Path, device_index: int = 0) -> Runtime:
    """Load the model file of one version directory with the runtime its config names."""
    cls = runtime_class_for(spec)
    version_dir = Path(version_dir)
    path = version_dir / spec.model_filename
    if not path.exists():
        raise RepositoryError(
            f"model {spec.name!r} version {version_dir.name}: {spec.model_filename} not found "
            f"in {version_dir} (platform {spec.platform or spec.backend} expects it)"
        )
    runtime = cls.load(spec, version_dir, device_index)
    logger.info(
        "model %s version %s: %s",
        spec.name,
        version_dir.name,
        ", ".join(f"{k}={v}" for k, v in runtime.describe().items()),
    )
    return runtime


__all__ = [
    "RUNTIMES",
    "RUNTIME_CLASSES",
    "OnnxRuntime",
    "Runtime",
    "TensorDict",
    "TensorRTRuntime",
    "TorchScriptRuntime",
    "load_runtime",
    "runtime_class_for",
]
