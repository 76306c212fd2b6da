"""Helpers shared by the runtimes: config ``parameters``, device choice, error text.

Kept free of framework imports so that every runtime module stays cheap to import.
"""

from __future__ import annotations

from pathlib import Path

from rayfront.params import param_bool, param_choice, param_int
from rayfront.spec import ModelSpec

__all__ = ["device_kind", "param_bool", "param_choice", "param_int", "short_error", "where"]

# Error text from native libraries can run to pages; clients get one line, capped.
_MAX_ERROR_CHARS = 300


def where(spec: ModelSpec, version_dir: Path) -> str:
    """``model 'x' version 2`` for messages."""
    return f"model {spec.name!r} version {Path(version_dir).name}"


def device_kind(spec: ModelSpec, *, gpu_available: bool) -> str:
    """ "GPU" or "CPU" from the instance groups: KIND_GPU wants a GPU, KIND_AUTO takes one
    when there is one, KIND_CPU and KIND_MODEL run on the CPU."""
    kinds = {g.kind for g in spec.instance_groups}
    if "KIND_GPU" in kinds:
        return "GPU"
    if "KIND_AUTO" in kinds and gpu_available:
        return "GPU"
    return "CPU"


def short_error(exc: BaseException) -> str:
    """A native library's error on one line, without its status-code preamble, capped."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    # ONNX Runtime: "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : <the useful part>"
    if text.startswith("[ONNXRuntimeError]"):
        text = text.split(" : ", 3)[-1]
    if len(text) > _MAX_ERROR_CHARS:
        text = text[: _MAX_ERROR_CHARS - 3] + "..."
    return text
