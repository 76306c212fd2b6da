"""ModelSpec: the one in-memory description of a model version's configuration.

It mirrors the parts of Triton's ``ModelConfig`` protobuf that rayfront acts on. The
repository layer converts it to and from ``config.pbtxt`` (see
:mod:`rayfront.repository.pbtxt`); the protocol validates requests against it; the
batcher and runtimes read their limits from it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rayfront.dtypes import check_datatype

Dims = tuple[int, ...]

PLATFORM_ONNX = "onnxruntime_onnx"
PLATFORM_TENSORRT = "tensorrt_plan"
PLATFORM_TORCHSCRIPT = "pytorch_libtorch"

# Triton's default model file name per platform.
DEFAULT_FILENAMES: dict[str, str] = {
    PLATFORM_ONNX: "model.onnx",
    PLATFORM_TENSORRT: "model.plan",
    PLATFORM_TORCHSCRIPT: "model.pt",
}


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Frozen):
    """One input or output of a model, as declared in config.pbtxt."""

    name: str = Field(min_length=1, description="Tensor name as the model's graph names it.")
    datatype: str = Field(description="KServe v2 datatype name, e.g. FP32, INT64, BYTES.")
    dims: Dims = Field(
        description="Shape per request, WITHOUT the batch dim when max_batch_size > 0; -1 is dynamic."
    )
    optional: bool = Field(default=False, description="Input may be omitted (Triton `optional`).")

    @field_validator("datatype")
    @classmethod
    def _datatype(cls, v: str) -> str:
        return check_datatype(v)

    @field_validator("dims")
    @classmethod
    def _dims(cls, v: Dims) -> Dims:
        for d in v:
            if d < -1 or d == 0:
                raise ValueError(f"dims must be positive or -1 (dynamic), got {list(v)}")
        return v

    def full_shape(self, max_batch_size: int) -> Dims:
        """Shape including the leading batch dim (-1) when the model batches."""
        return (-1, *self.dims) if max_batch_size > 0 else self.dims


class QueuePolicy(_Frozen):
    """Triton's ModelQueuePolicy subset: timeouts and queue bounds."""

    default_timeout_microseconds: int = Field(
        default=0, ge=0, description="Timeout applied when a request names none; 0 = none."
    )
    allow_timeout_override: bool = Field(
        default=True, description="Requests may set their own `timeout` parameter."
    )
    max_queue_size: int = Field(
        default=0, ge=0, description="Requests queued beyond this get 503; 0 = unbounded."
    )


class DynamicBatching(_Frozen):
    """Triton's ModelDynamicBatching: how requests are grouped into batches."""

    preferred_batch_size: tuple[int, ...] = Field(
        default=(), description="Batch sizes the scheduler tries to form (ascending)."
    )
    max_queue_delay_microseconds: int = Field(
        default=0, ge=0, description="Longest a request may wait for a preferred batch."
    )
    preserve_ordering: bool = Field(default=False, description="Responses in arrival order.")
    priority_levels: int = Field(default=0, ge=0, description="Number of priority levels; 0 = one.")
    default_priority_level: int = Field(default=0, ge=0, description="Priority when unset.")
    default_queue_policy: QueuePolicy = Field(
        default_factory=QueuePolicy, description="Timeouts and queue size."
    )

    @field_validator("preferred_batch_size")
    @classmethod
    def _sorted(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(b <= 0 for b in v):
            raise ValueError(f"preferred_batch_size entries must be > 0, got {list(v)}")
        return tuple(sorted(set(v)))


class InstanceGroup(_Frozen):
    """Where replicas of the model run (Triton's ModelInstanceGroup)."""

    kind: Literal["KIND_AUTO", "KIND_CPU", "KIND_GPU", "KIND_MODEL"] = Field(
        default="KIND_CPU", description="Device kind for the instances."
    )
    count: int = Field(default=1, ge=1, description="Instances (rayfront: initial replicas).")
    gpus: tuple[int, ...] = Field(default=(), description="GPU ids for KIND_GPU.")


class WarmupInput(_Frozen):
    """One input of a warm-up sample (Triton's ``ModelWarmup.Input``)."""

    datatype: str = Field(description="KServe v2 datatype name.")
    dims: Dims = Field(description="Shape of one row (without the batch dim when batching).")
    source: Literal["zero", "random", "file"] = Field(
        default="zero", description="Zeros, random data, or the bytes of a file."
    )
    file: str = Field(
        default="", description="With source=file: a file name in the model's warmup/ folder."
    )

    @field_validator("datatype")
    @classmethod
    def _datatype(cls, v: str) -> str:
        return check_datatype(v)

    @model_validator(mode="after")
    def _file(self) -> WarmupInput:
        if (self.source == "file") != bool(self.file):
            raise ValueError("a warm-up input names a file exactly when its source is 'file'")
        if self.file and ("/" in self.file or self.file.startswith(".")):
            raise ValueError(f"warm-up file {self.file!r} must be a plain name in warmup/")
        return self


class ModelWarmup(_Frozen):
    """One warm-up sample run before a version reports ready (Triton's ``model_warmup``)."""

    name: str = Field(min_length=1, description="Sample name, for logs.")
    batch_size: int = Field(default=1, ge=0, description="Rows; 0 for non-batching models.")
    count: int = Field(default=1, ge=1, description="Times the sample runs.")
    inputs: dict[str, WarmupInput] = Field(description="Every input the model needs.")


class VersionPolicy(_Frozen):
    """Which versions are served (Triton's ModelVersionPolicy)."""

    kind: Literal["latest", "all", "specific"] = Field(default="latest", description="Policy.")
    num_versions: int = Field(default=1, ge=1, description="For `latest`: how many.")
    versions: tuple[int, ...] = Field(default=(), description="For `specific`: which.")


class ModelSpec(_Frozen):
    """The configuration of one model, shared by all its versions."""

    name: str = Field(min_length=1, description="Model name (the repository folder name).")
    platform: str = Field(description="Triton platform, e.g. onnxruntime_onnx, tensorrt_plan.")
    backend: str = Field(default="", description="Triton backend name, if given instead.")
    max_batch_size: int = Field(default=0, ge=0, description="0 = model does not batch.")
    inputs: tuple[TensorSpec, ...] = Field(description="Model inputs.")
    outputs: tuple[TensorSpec, ...] = Field(description="Model outputs.")
    dynamic_batching: DynamicBatching | None = Field(
        default=None, description="Dynamic batching settings; None = one request per execution."
    )
    instance_groups: tuple[InstanceGroup, ...] = Field(
        default=(InstanceGroup(),), description="Instance groups."
    )
    version_policy: VersionPolicy = Field(
        default_factory=VersionPolicy, description="Which versions to serve."
    )
    parameters: dict[str, str] = Field(
        default_factory=dict, description="Free-form `parameters` (runtime options, autoscaling)."
    )
    model_warmup: tuple[ModelWarmup, ...] = Field(
        default=(), description="Warm-up samples; none = rayfront warms up its batch sizes."
    )
    default_model_filename: str = Field(default="", description="Override of model file name.")

    @model_validator(mode="after")
    def _unique_names(self) -> ModelSpec:
        for kind, tensors in (("input", self.inputs), ("output", self.outputs)):
            names = [t.name for t in tensors]
            dupes = {n for n in names if names.count(n) > 1}
            if dupes:
                raise ValueError(f"model {self.name!r}: duplicate {kind} names {sorted(dupes)}")
        return self

    @property
    def model_filename(self) -> str:
        """File name inside a version directory."""
        return self.default_model_filename or DEFAULT_FILENAMES.get(self.platform, "model.onnx")

    @property
    def uses_gpu(self) -> bool:
        return any(g.kind == "KIND_GPU" for g in self.instance_groups)

    def input(self, name: str) -> TensorSpec | None:
        return next((t for t in self.inputs if t.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((t for t in self.outputs if t.name == name), None)

    def signature(
        self,
    ) -> tuple[tuple[tuple[str, str, Dims], ...], tuple[tuple[str, str, Dims], ...]]:
        """(inputs, outputs) as comparable tuples; versions of one model must agree on it."""
        return (
            tuple((t.name, t.datatype, t.dims) for t in self.inputs),
            tuple((t.name, t.datatype, t.dims) for t in self.outputs),
        )
