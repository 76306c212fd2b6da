"""The runtime contract: load a version directory, describe it, run a batch.

A runtime owns one loaded model version. ``infer`` takes full tensors (batch dim
included when the model batches) and returns every output; the batcher and the
protocol layers never see framework objects. A runtime on a GPU also offers
:meth:`Runtime.device_program`, the model as a function of device tensors, which the
pinned, pipelined data path (:mod:`rayfront.runtimes.device_pipeline`) drives;
:meth:`Runtime.fork` gives a further execution instance sharing the weights.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from rayfront.spec import ModelSpec
from rayfront.tensors import TensorDict


class Runtime(ABC):
    """Base class for execution backends, selected by the config's platform/backend."""

    #: Triton ``platform`` names this runtime serves (e.g. ``onnxruntime_onnx``).
    platforms: ClassVar[tuple[str, ...]] = ()
    #: Triton ``backend`` names this runtime serves (e.g. ``onnxruntime``).
    backends: ClassVar[tuple[str, ...]] = ()

    def __init__(self, spec: ModelSpec, version_dir: Path) -> None:
        self.spec = spec
        self.version_dir = version_dir

    @classmethod
    @abstractmethod
    def load(cls, spec: ModelSpec, version_dir: Path, device_index: int = 0) -> Runtime:
        """Load the model file in ``version_dir`` (on GPU ``device_index`` when the instance
        group asks for one); raise RepositoryError/ModelLoadError clearly."""

    @abstractmethod
    def infer(self, inputs: TensorDict) -> TensorDict:
        """Run one batch; return all outputs named as in ``spec.outputs``."""

    def describe(self) -> dict[str, str]:
        """Human-facing facts for logs and metadata (provider, device, versions)."""
        return {"runtime": type(self).__name__}

    def device_program(self) -> Any | None:
        """The model as a :class:`~rayfront.runtimes.device_pipeline.DeviceProgram` with its
        device, ``(program, device)``, when it runs on a GPU; None for host execution."""
        return None

    def fork(self) -> Runtime:
        """Another execution instance of this version. The default shares this object
        (thread-safe runtimes); a runtime with per-execution state returns a new one."""
        return self

    def close(self) -> None:  # noqa: B027 - optional hook, most runtimes hold nothing to free
        """Release sessions/buffers; default does nothing."""
