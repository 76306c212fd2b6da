"""ONNX Runtime for ``onnxruntime_onnx`` models (``model.onnx``).

Execution providers come from the instance group: KIND_GPU asks for the TensorRT EP,
then the CUDA EP (whichever this host's onnxruntime has), with the CPU EP behind them
for unsupported nodes; KIND_CPU uses the CPU EP only. Session options come from the
config's ``parameters`` (Triton's ONNX Runtime backend names where it has them):

=================================  =========================================================
``intra_op_thread_count``          threads inside one operator (0 = ORT default)
``inter_op_thread_count``          threads across operators, with ``execution_mode`` parallel
``execution_mode``                 ``sequential`` (default) or ``parallel``
``graph_optimization_level``       ``disable``, ``basic``, ``extended``, ``all`` (default)
``enable_mem_pattern``             bool, default true
``enable_mem_arena``               bool, default true (the CPU memory arena)
``allow_spinning``                 bool, default **false**: idle ORT threads spin otherwise,
                                   which measured slower on a 2-core host shared with the
                                   server's own threads
``allow_cpu_fallback``             bool, default false: run KIND_GPU models on the CPU EP
                                   when no GPU provider is available instead of refusing
``tensorrt_ep``                    bool, default true: try the TensorRT EP first on GPU
``tensorrt_fp16``                  bool, default false: let the TensorRT EP use FP16
``tensorrt_cache_path``            directory for the TensorRT EP's engine cache (off if unset)
``io_binding``                     bool, default true: on a GPU, run on the pinned pipeline
                                   with IO binding on its device buffers
                                   (:mod:`rayfront.runtimes.ort_device`); false = ``run``
``session.*``                      passed verbatim to ``SessionOptions.add_session_config_entry``
=================================  =========================================================

onnxruntime is imported only when a model is loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from rayfront.dtypes import to_numpy
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
from rayfront.spec import PLATFORM_ONNX, ModelSpec
from rayfront.tensors import TensorDict

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

TENSORRT_EP = "TensorrtExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"

Provider = str | tuple[str, dict[str, Any]]

_OPT_LEVELS = ("disable", "basic", "extended", "all")


class OrtOptions(BaseModel):
    """Session and provider options read from a model's config ``parameters``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    intra_op_threads: int = Field(
        default=0, ge=0, description="intra_op_num_threads; 0 = ORT default."
    )
    inter_op_threads: int = Field(
        default=0, ge=0, description="inter_op_num_threads; 0 = ORT default."
    )
    execution_mode: Literal["sequential", "parallel"] = Field(
        default="sequential", description="ORT execution mode."
    )
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = Field(
        default="all", description="Graph optimizations ORT applies at load."
    )
    enable_mem_pattern: bool = Field(default=True, description="Reuse memory plans across runs.")
    enable_mem_arena: bool = Field(default=True, description="CPU memory arena.")
    allow_spinning: bool = Field(default=False, description="Let idle ORT threads spin.")
    allow_cpu_fallback: bool = Field(
        default=False, description="Run a KIND_GPU model on CPU when no GPU provider exists."
    )
    tensorrt_ep: bool = Field(default=True, description="Try the TensorRT EP first on GPU.")
    tensorrt_fp16: bool = Field(default=False, description="TensorRT EP may use FP16.")
    tensorrt_cache_path: str = Field(default="", description="TensorRT EP engine cache dir.")
    io_binding: bool = Field(
        default=True, description="On a GPU, IO binding on the pinned pipeline's buffers."
    )
    config_entries: dict[str, str] = Field(
        default_factory=dict, description="`session.*` parameters, passed verbatim."
    )

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> OrtOptions:
        """Parse the known keys of ``spec.parameters``; other keys belong to others."""
        mode = spec.parameters.get("execution_mode", "").strip().lower()
        # Triton's ORT backend spells these 0/1.
        mode = {"0": "sequential", "1": "parallel"}.get(mode, mode)
        if mode not in ("", "sequential", "parallel"):
            raise RepositoryError(
                f"model {spec.name!r}: parameter 'execution_mode' is "
                f"{spec.parameters['execution_mode']!r}; expected sequential or parallel (0 or 1)"
            )
        return cls(
            intra_op_threads=param_int(spec, "intra_op_thread_count", 0),
            inter_op_threads=param_int(spec, "inter_op_thread_count", 0),
            execution_mode=mode or "sequential",  # type: ignore[arg-type]
            graph_optimization_level=param_choice(  # type: ignore[arg-type]
                spec, "graph_optimization_level", _OPT_LEVELS, "all"
            ),
            enable_mem_pattern=param_bool(spec, "enable_mem_pattern", True),
            enable_mem_arena=param_bool(spec, "enable_mem_arena", True),
            allow_spinning=param_bool(spec, "allow_spinning", False),
            allow_cpu_fallback=param_bool(spec, "allow_cpu_fallback", False),
            tensorrt_ep=param_bool(spec, "tensorrt_ep", True),
            tensorrt_fp16=param_bool(spec, "tensorrt_fp16", False),
            tensorrt_cache_path=spec.parameters.get("tensorrt_cache_path", ""),
            io_binding=param_bool(spec, "io_binding", True),
            config_entries={k: v for k, v in spec.parameters.items() if k.startswith("session.")},
        )


def select_providers(
    spec: ModelSpec, available: list[str], options: OrtOptions, device_index: int = 0
) -> tuple[list[Provider], str]:
    """(providers for InferenceSession, "GPU" or "CPU"), from the instance group.

    ``device_index`` counts the GPUs this process sees (Ray numbers a replica's GPUs from 0).
    """
    gpu_available = CUDA_EP in available or TENSORRT_EP in available
    if device_kind(spec, gpu_available=gpu_available) == "CPU":
        return [CPU_EP], "CPU"
    providers: list[Provider] = []
    if options.tensorrt_ep and TENSORRT_EP in available:
        trt: dict[str, Any] = {
            "device_id": device_index,
            "trt_fp16_enable": options.tensorrt_fp16,
        }
        if options.tensorrt_cache_path:
            trt |= {
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": options.tensorrt_cache_path,
            }
        providers.append((TENSORRT_EP, trt))
    if CUDA_EP in available:
        providers.append((CUDA_EP, {"device_id": device_index}))
    if not providers:
        if not options.allow_cpu_fallback:
            raise RepositoryError(
                f"model {spec.name!r}: instance_group KIND_GPU needs ONNX Runtime's CUDA or "
                f"TensorRT execution provider, but this host's onnxruntime has only "
                f"{', '.join(available) or 'none'}; install onnxruntime-gpu (the 'gpu' extra), "
                "use instance_group kind KIND_CPU, or set parameter allow_cpu_fallback=true"
            )
        logger.warning(
            "model %s: no GPU execution provider (available: %s); running on CPU as "
            "allow_cpu_fallback permits",
            spec.name,
            ", ".join(available),
        )
        return [CPU_EP], "CPU"
    return [*providers, CPU_EP], "GPU"


def _session_options(ort: Any, options: OrtOptions) -> Any:
    so = ort.SessionOptions()
    so.intra_op_num_threads = options.intra_op_threads
    so.inter_op_num_threads = options.inter_op_threads
    so.execution_mode = (
        ort.ExecutionMode.ORT_PARALLEL
        if options.execution_mode == "parallel"
        else ort.ExecutionMode.ORT_SEQUENTIAL
    )
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[options.graph_optimization_level]
    so.enable_mem_pattern = options.enable_mem_pattern
    so.enable_cpu_mem_arena = options.enable_mem_arena
    spinning = "1" if options.allow_spinning else "0"
    entries = {
        "session.intra_op.allow_spinning": spinning,
        "session.inter_op.allow_spinning": spinning,
        **options.config_entries,  # explicit session.* parameters win
    }
    for key, value in entries.items():
        so.add_session_config_entry(key, value)
    return so


def _ort_errors() -> tuple[type[BaseException], ...]:
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    return tuple(
        obj for obj in vars(state).values() if isinstance(obj, type) and issubclass(obj, Exception)
    )


def _to_ort_strings(arr: np.ndarray) -> np.ndarray:
    """ORT string tensors take str objects; KServe BYTES arrive as bytes."""
    flat = [v.decode("utf-8") if isinstance(v, bytes | bytearray) else str(v) for v in arr.ravel()]
    return np.array(flat, dtype=object).reshape(arr.shape)


def _from_ort_strings(arr: np.ndarray) -> np.ndarray:
    flat = [v.encode("utf-8") if isinstance(v, str) else v for v in arr.ravel()]
    return np.array(flat, dtype=object).reshape(arr.shape)


class OnnxRuntime(Runtime):
    """One ``onnxruntime.InferenceSession`` per loaded version; ``run`` is thread-safe."""

    platforms = (PLATFORM_ONNX,)
    backends = ("onnxruntime",)

    def __init__(
        self,
        spec: ModelSpec,
        version_dir: Path,
        session: Any,
        *,
        device: str,
        options: OrtOptions,
        device_index: int = 0,
    ) -> None:
        super().__init__(spec, version_dir)
        self._session = session
        self._device = device
        self._device_index = device_index
        self._options = options
        self._output_names = [t.name for t in spec.outputs]
        self._input_dtypes = {t.name: to_numpy(t.datatype) for t in spec.inputs}
        self._required = [t.name for t in spec.inputs if not t.optional]
        self._string_outputs = {t.name for t in spec.outputs if t.datatype == "BYTES"}
        import onnxruntime

        self._ort_version = onnxruntime.__version__
        self._errors = _ort_errors()
        # ORT's own InvalidArgument (bad shape, missing input) is the request's fault.
        self._invalid_argument = next(
            (e for e in self._errors if e.__name__ == "InvalidArgument"), None
        )

    @classmethod
    def load(cls, spec: ModelSpec, version_dir: Path, device_index: int = 0) -> OnnxRuntime:
        import onnxruntime as ort

        from rayfront.repository.validate import check_onnx_signature

        version_dir = Path(version_dir)
        path = version_dir / spec.model_filename
        label = where(spec, version_dir)
        problems = check_onnx_signature(spec, path)
        if problems:
            raise RepositoryError(
                f"{label}: {path.name} does not match config.pbtxt: " + "; ".join(problems)
            )
        options = OrtOptions.from_spec(spec)
        providers, device = select_providers(
            spec, ort.get_available_providers(), options, device_index
        )
        try:
            session = ort.InferenceSession(
                str(path), sess_options=_session_options(ort, options), providers=providers
            )
        except _ort_errors() as exc:
            raise RepositoryError(
                f"{label}: ONNX Runtime cannot load {path.name}: {short_error(exc)}"
            ) from None
        if device == "GPU" and not {CUDA_EP, TENSORRT_EP} & set(session.get_providers()):
            # ORT drops a provider whose CUDA libraries fail to load, with only a log line.
            if not options.allow_cpu_fallback:
                raise RepositoryError(
                    f"{label}: ONNX Runtime could not start a GPU provider (it fell back to "
                    f"{', '.join(session.get_providers())}); check the CUDA/cuDNN install, or "
                    "set parameter allow_cpu_fallback=true"
                )
            device = "CPU"
        runtime = cls(
            spec, version_dir, session, device=device, options=options, device_index=device_index
        )
        logger.info("%s: loaded %s with %s", label, path.name, ", ".join(session.get_providers()))
        return runtime

    @property
    def session(self) -> Any:
        """The ``onnxruntime.InferenceSession`` (thread-safe ``run``)."""
        return self._session

    def check_inputs(self, names: Iterable[str]) -> None:
        """Refuse unknown names and missing required inputs, naming them."""
        names = set(names)
        unknown = sorted(n for n in names if n not in self._input_dtypes)
        if unknown:
            raise InvalidArgumentError(
                f"model {self.spec.name!r} has no input {unknown[0]!r}; expected "
                f"{', '.join(self._input_dtypes)}"
            )
        missing = [n for n in self._required if n not in names]
        if missing:
            raise InvalidArgumentError(
                f"model {self.spec.name!r}: missing required input(s) "
                f"{', '.join(map(repr, missing))}"
            )

    def run_guarded(self, call: Callable[[], _T]) -> _T:
        """Run an ORT call; its errors become one-line InvalidArgument / Internal errors."""
        try:
            return call()
        except self._errors as exc:
            message = f"model {self.spec.name!r}: ONNX Runtime failed: {short_error(exc)}"
            if self._invalid_argument is not None and isinstance(exc, self._invalid_argument):
                raise InvalidArgumentError(message) from None
            raise InternalError(message) from None

    def infer(self, inputs: TensorDict) -> TensorDict:
        self.check_inputs(inputs)
        feed: dict[str, np.ndarray] = {}
        for name, arr in inputs.items():
            dtype = self._input_dtypes[name]
            if dtype.kind == "O":
                feed[name] = _to_ort_strings(arr)
            else:
                # No copy when the array already has the dtype and is C-contiguous.
                feed[name] = np.ascontiguousarray(arr, dtype=dtype)
        results = self.run_guarded(lambda: self._session.run(self._output_names, feed))
        return {
            name: _from_ort_strings(out) if name in self._string_outputs else out
            for name, out in zip(self._output_names, results, strict=True)
        }

    def device_program(self) -> tuple[Any, str] | None:
        """IO binding on the pinned pipeline when the session runs on a GPU (and torch,
        the pipeline's device library, sees CUDA); None runs ``infer`` on the host path."""
        if self._device != "GPU" or not self._options.io_binding:
            return None
        if any(t.datatype == "BYTES" for t in (*self.spec.inputs, *self.spec.outputs)):
            return None
        try:
            import torch
        except ImportError:
            torch = None
        if torch is None or not torch.cuda.is_available():
            logger.warning(
                "model %s: ONNX Runtime runs on a GPU but torch sees no CUDA; the pinned "
                "pipeline is off (batches go through session.run)",
                self.spec.name,
            )
            return None
        from rayfront.runtimes.ort_device import OrtProgram

        return OrtProgram(self, "cuda", self._device_index), f"cuda:{self._device_index}"

    def describe(self) -> dict[str, str]:
        return {
            "runtime": "onnxruntime",
            "onnxruntime": self._ort_version,
            "device": self._device,
            "providers": ", ".join(self._session.get_providers()) if self._session else "",
            "intra_op_threads": str(self._options.intra_op_threads),
            "allow_spinning": str(self._options.allow_spinning).lower(),
            "io_binding": str(self._device == "GPU" and self._options.io_binding).lower(),
        }

    def close(self) -> None:
        self._session = None
