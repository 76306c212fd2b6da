"""``ExportRequest``: every option of ``rayfront export``, validated in one place.

The CLI builds one from its flags; library callers (the demos, tests) build one directly and
may pass parsed :class:`~rayfront.spec.TensorSpec` objects or the CLI's spec strings.
Malformed specs raise :class:`~rayfront.errors.InputSpecError` straight through pydantic, so
the user sees the spec and the rule rather than a validation dump.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rayfront.errors import InputSpecError
from rayfront.export.onnx_export import DEFAULT_OPSET
from rayfront.export.parity import DEFAULT_ATOL, DEFAULT_RTOL
from rayfront.export.specs import (
    OutputSpec,
    ShapeRange,
    check_trt_shapes,
    check_unique,
    parse_input_spec,
    parse_output_spec,
    parse_trt_shape,
)
from rayfront.export.tensorrt import DEFAULT_WORKSPACE_MB
from rayfront.spec import TensorSpec, VersionPolicy

_MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
# Suffixes of the sibling models a TensorRT plan / TorchScript file is written to.
TRT_SUFFIX = "_trt"
TORCHSCRIPT_SUFFIX = "_torchscript"


def parse_version_policy(text: str) -> VersionPolicy:
    """``latest``, ``latest:N``, ``all`` or ``specific:1,3`` -> :class:`VersionPolicy`."""
    kind, _, arg = text.strip().partition(":")
    rule = "expected latest, latest:N, all, or specific:V1,V2,..."
    try:
        if kind == "latest":
            return VersionPolicy(kind="latest", num_versions=int(arg) if arg else 1)
        if kind == "all" and not arg:
            return VersionPolicy(kind="all")
        if kind == "specific" and arg:
            return VersionPolicy(
                kind="specific", versions=tuple(int(v) for v in arg.split(",") if v.strip())
            )
    except ValueError:
        pass
    raise InputSpecError(f"--version-policy {text!r}: {rule}")


class ExportRequest(BaseModel):
    """What to export, how to check it, and how the repository should serve it."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    model_ref: str = Field(
        min_length=1,
        description="package.module:factory, path/to/file.py:factory, or a .pt/.ts/.pt2 file.",
    )
    name: str = Field(description="Model name in the repository (its folder name).")
    inputs: tuple[TensorSpec, ...] = Field(
        min_length=1, description="Inputs in forward() order; strings NAME:DTYPE:SHAPE accepted."
    )
    outputs: tuple[OutputSpec, ...] = Field(
        default=(), description="Output names in return order; empty = output__0, output__1, ..."
    )
    max_batch_size: int = Field(
        ge=0, description="Largest batch; 0 = the model does not batch (no implicit batch dim)."
    )
    repository: Path = Field(
        default=Path("model_repository"), description="Triton model repository to write into."
    )
    tensorrt: Literal["auto", "on", "off"] = Field(
        default="auto", description="Build a TensorRT plan: when available, always, or never."
    )
    fp16: bool = Field(default=False, description="Allow FP16 kernels in the TensorRT plan.")
    precision: Literal["fp32", "fp16", "bf16"] = Field(
        default="fp32",
        description="GPU compute precision of the TorchScript model and the TensorRT plan; "
        "clients keep the config's FP32 tensors either way.",
    )
    fp16_atol: float = Field(
        default=1e-2, ge=0, description="atol for a reduced-precision (FP16/BF16) parity check."
    )
    fp16_rtol: float = Field(
        default=1e-2, ge=0, description="rtol for a reduced-precision (FP16/BF16) parity check."
    )
    bf16_rtol: float = Field(
        default=4e-2,
        ge=0,
        description="rtol for BF16 parity: 8 mantissa bits carry ~3 significant digits.",
    )
    trt_shapes: tuple[ShapeRange, ...] = Field(
        default=(), description="min/opt/max per input for dynamic non-batch dims."
    )
    trt_workspace_mb: int = Field(
        default=DEFAULT_WORKSPACE_MB, ge=16, description="TensorRT builder workspace limit, MiB."
    )
    atol: float = Field(default=DEFAULT_ATOL, ge=0, description="Parity absolute tolerance.")
    rtol: float = Field(default=DEFAULT_RTOL, ge=0, description="Parity relative tolerance.")
    opset: int = Field(default=DEFAULT_OPSET, ge=13, le=25, description="ONNX opset version.")
    legacy_exporter: bool = Field(
        default=False, description="Skip the dynamo exporter and use the legacy one directly."
    )
    torchscript: bool = Field(
        default=False, description="Also write a TorchScript model NAME_torchscript."
    )
    preferred_batch_sizes: tuple[int, ...] = Field(
        default=(), description="Dynamic batcher's preferred sizes; empty = [max/2, max]."
    )
    max_queue_delay_us: int = Field(
        default=500, ge=0, description="Longest a request waits for a fuller batch, microseconds."
    )
    instance_kind: Literal["cpu", "gpu"] = Field(
        default="cpu", description="Where the ONNX / TorchScript model runs."
    )
    instance_count: int = Field(default=1, ge=1, description="Instances (initial replicas).")
    version_policy: VersionPolicy = Field(
        default_factory=VersionPolicy, description="Which versions are served."
    )
    parity_batch_sizes: tuple[int, ...] = Field(
        default=(), description="Batch sizes for the parity check; empty = 1, max/2, max."
    )
    seed: int = Field(default=0, description="Seed of the parity inputs.")
    reference_data: Path | None = Field(
        default=None,
        description=(
            "An .npz of real inputs (one array per input, rows first) profiled into the "
            "sidecar for live drift monitoring; None = profile the parity inputs."
        ),
    )
    provenance_extra: dict[str, Any] = Field(
        default_factory=dict, description="Added to the sidecar's `extra` (e.g. accuracy)."
    )
    extra_files: dict[str, Path] = Field(
        default_factory=dict, description="More files for the ONNX version folder (name -> source)."
    )
    debug: bool = Field(default=False, description="Show exporter warnings and chatter.")
    progress: bool = Field(default=True, description="Show a progress display on stderr.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _MODEL_NAME.match(v):
            raise InputSpecError(
                f"--name {v!r}: a model name is one folder name of letters, digits, '_', '.' "
                "and '-', not starting with '.' or '-'"
            )
        return v

    @field_validator("inputs", mode="before")
    @classmethod
    def _parse_inputs(cls, v: Any) -> Any:
        return [parse_input_spec(x) if isinstance(x, str) else x for x in v]

    @field_validator("outputs", mode="before")
    @classmethod
    def _parse_outputs(cls, v: Any) -> Any:
        return [parse_output_spec(x) if isinstance(x, str) else x for x in v or ()]

    @field_validator("trt_shapes", mode="before")
    @classmethod
    def _parse_trt_shapes(cls, v: Any) -> Any:
        return [parse_trt_shape(x) if isinstance(x, str) else x for x in v or ()]

    @field_validator("version_policy", mode="before")
    @classmethod
    def _parse_policy(cls, v: Any) -> Any:
        return parse_version_policy(v) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _cross_checks(self) -> ExportRequest:
        check_unique((t.name for t in self.inputs), "--input")
        check_unique((t.name for t in self.outputs), "--output")
        clash = {t.name for t in self.inputs} & {t.name for t in self.outputs}
        if clash:
            raise InputSpecError(
                f"names {sorted(clash)} are used for both an input and an output; "
                "a tensor name must be unique within the model"
            )
        check_trt_shapes(self.trt_shapes, self.inputs)
        mbs = self.max_batch_size
        for flag, sizes in (
            ("--preferred-batch-size", self.preferred_batch_sizes),
            ("--parity-batch-size", self.parity_batch_sizes),
        ):
            if sizes and mbs == 0:
                raise InputSpecError(
                    f"{flag} needs batching; --max-batch-size is 0 (the model does not batch)"
                )
            bad = [b for b in sizes if not 1 <= b <= mbs]
            if bad:
                raise InputSpecError(f"{flag} {bad} must be within 1..--max-batch-size ({mbs})")
        if self.fp16 and self.tensorrt == "off":
            raise InputSpecError(
                "--fp16 applies to the TensorRT plan; it has no effect with --tensorrt off"
            )
        if self.fp16 and self.precision == "bf16":
            raise InputSpecError("--fp16 and --precision bf16 contradict each other; pick one")
        if self.precision != "fp32" and not self.torchscript and self.tensorrt == "off":
            raise InputSpecError(
                f"--precision {self.precision} applies to the TorchScript model and the "
                "TensorRT plan; add --torchscript or leave --tensorrt on/auto"
            )
        return self

    @property
    def trt_fp16(self) -> bool:
        """Whether the TensorRT plan may use FP16 kernels."""
        return self.fp16 or self.precision == "fp16"

    def reduced_tolerance(self, precision: str) -> tuple[float, float]:
        """(atol, rtol) for an artifact computing in ``precision``."""
        if precision == "fp32":
            return self.atol, self.rtol
        rtol = self.bf16_rtol if precision == "bf16" else self.fp16_rtol
        return max(self.atol, self.fp16_atol), max(self.rtol, rtol)

    @property
    def effective_preferred_batch_sizes(self) -> tuple[int, ...]:
        """Preferred sizes for the dynamic batcher: given ones, else max/2 and max."""
        if self.max_batch_size == 0:
            return ()
        if self.preferred_batch_sizes:
            return tuple(sorted(set(self.preferred_batch_sizes)))
        return tuple(sorted({max(1, self.max_batch_size // 2), self.max_batch_size}))

    @property
    def trt_name(self) -> str:
        """Model the TensorRT plan is written to."""
        return self.name + TRT_SUFFIX

    @property
    def torchscript_name(self) -> str:
        """Model the TorchScript file is written to."""
        return self.name + TORCHSCRIPT_SUFFIX
