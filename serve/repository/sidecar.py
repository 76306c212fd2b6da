"""Provenance sidecar: ``<model>/<version>/rayfront.json``.

Triton ignores unknown files in a version directory, so the sidecar travels with the model
file without disturbing stock Triton. It records where the version came from, the exact
files (sha256), the parity check against PyTorch, and, for TensorRT plans, the TensorRT
version and GPU the plan was built for (a plan only runs on those).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rayfront.drift import ReferenceProfile
from rayfront.errors import RepositoryError
from rayfront.repository._fs import atomic_write_text

SIDECAR_NAME = "rayfront.json"


class ParityRecord(BaseModel):
    """One parity comparison of an exported artifact against PyTorch."""

    # A diverged export can measure inf/NaN errors; they must survive the JSON round trip
    # (pydantic's default writes null, which would make the sidecar unreadable).
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")

    format: Literal["onnx", "tensorrt", "torchscript"] = Field(
        description="Which artifact was compared with PyTorch."
    )
    precision: Literal["fp32", "fp16", "bf16"] = Field(
        default="fp32", description="Precision the artifact computed in for this comparison."
    )
    batch_size: int = Field(ge=0, description="Batch size of the compared inputs.")
    case: str = Field(description="Input case, e.g. 'random', 'zeros', 'large'.")
    max_abs_err: float = Field(description="Largest absolute difference over all outputs.")
    max_rel_err: float = Field(description="Largest relative difference over all outputs.")
    atol: float = Field(ge=0, description="Absolute tolerance the check used.")
    rtol: float = Field(ge=0, description="Relative tolerance the check used.")
    passed: bool = Field(description="Whether the artifact was within tolerance.")

    def describe(self) -> str:
        """One-line summary for reports."""
        return (
            f"{self.format} parity case {self.case!r} at batch {self.batch_size}: "
            f"max_abs_err {self.max_abs_err:.3g} (atol {self.atol:.3g}), "
            f"max_rel_err {self.max_rel_err:.3g} (rtol {self.rtol:.3g})"
        )


class TensorRTStamp(BaseModel):
    """What a TensorRT plan was built with; a plan is only valid on the same combination."""

    model_config = ConfigDict(extra="forbid")

    tensorrt_version: str = Field(min_length=1, description="tensorrt.__version__ at build.")
    compute_capability: str = Field(
        pattern=r"^\d+\.\d+$", description="GPU compute capability at build, e.g. '9.0'."
    )
    gpu_name: str = Field(description="GPU the plan was built on, e.g. 'NVIDIA H100 80GB HBM3'.")
    fp16: bool = Field(description="Whether FP16 kernels were allowed.")
    bf16: bool = Field(default=False, description="Whether BF16 kernels were allowed.")
    profiles: dict[str, dict[str, list[int]]] = Field(
        default_factory=dict,
        description="Optimization profile per input: {'min': shape, 'opt': shape, 'max': shape}.",
    )


class Provenance(BaseModel):
    """Everything known about how one model version was produced."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="The PyTorch model reference or file that was exported.")
    created_at: datetime = Field(
        description="When the version was written (UTC, timezone-aware preferred)."
    )
    exporter: Literal["dynamo", "legacy", "torchscript", "external"] = Field(
        description="Which exporter produced the graph."
    )
    exporter_note: str = Field(
        default="", description="Why a fallback exporter was used, or other exporter remarks."
    )
    opset: int | None = Field(default=None, description="ONNX opset; None for non-ONNX versions.")
    versions: dict[str, str] = Field(
        default_factory=dict, description="Library versions used: torch, onnx, onnxruntime, ..."
    )
    files: dict[str, str] = Field(
        default_factory=dict,
        description="File name inside the version dir -> sha256 (filled in by the writer).",
    )
    parity: list[ParityRecord] = Field(default_factory=list, description="Parity results.")
    tensorrt: TensorRTStamp | None = Field(default=None, description="Set for TensorRT plans.")
    reference: ReferenceProfile | None = Field(
        default=None,
        description="Input/output profiles of the reference sample, for live drift monitoring.",
    )
    extra: dict[str, Any] = Field(default_factory=dict, description="Free-form additions.")

    @property
    def parity_passed(self) -> bool:
        """True when every recorded parity check passed (vacuously true with none)."""
        return all(r.passed for r in self.parity)

    @property
    def max_abs_err(self) -> float | None:
        """Worst absolute error over all parity records; None when none were recorded."""
        return max((r.max_abs_err for r in self.parity), default=None)


def write_sidecar(version_dir: Path, prov: Provenance) -> Path:
    """Write ``rayfront.json`` into ``version_dir`` atomically; returns its path."""
    path = Path(version_dir) / SIDECAR_NAME
    atomic_write_text(path, prov.model_dump_json(indent=2) + "\n")
    return path


def read_sidecar(version_dir: Path) -> Provenance | None:
    """The version's provenance, or None when it has no sidecar (e.g. a stock Triton repo).

    A sidecar that exists but is unreadable or malformed raises :class:`RepositoryError`
    naming the file, because silently treating it as absent would hide a failed parity.
    """
    path = Path(version_dir) / SIDECAR_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise RepositoryError(f"{path}: cannot read provenance sidecar: {err}") from None
    try:
        return Provenance.model_validate_json(raw)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(document)"
        raise RepositoryError(
            f"{path}: invalid provenance sidecar: {loc}: {first['msg']}"
            + (f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else "")
        ) from None


def sidecar_json(prov: Provenance) -> dict[str, Any]:
    """JSON-ready dict of a provenance record (for ``--json`` CLI output)."""
    return json.loads(prov.model_dump_json())
