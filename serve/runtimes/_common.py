"""Helpers shared by the runtimes: config ``parameters``, device choice, error text.

Kept free of framework imports so that every runtime module stays cheap to import.
"""

from __future__ import annotations

from pathlib import Path

from rayfront.errors import RepositoryError
from rayfront.spec import ModelSpec

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})

# Error text from native libraries can run to pages; clients get one line, capped.
_MAX_ERROR_CHARS = 300


def where(spec: ModelSpec, version_dir: Path) -> str:
    """``model 'x' version 2`` for messages."""
    return f"model {spec.name!r} version {Path(version_dir).name}"


def param_bool(spec: ModelSpec, key: str, default: bool) -> bool:
    """A boolean config parameter ("1"/"0", "true"/"false", "yes"/"no", "on"/"off")."""
    raw = spec.parameters.get(key)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise RepositoryError(
        f"model {spec.name!r}: parameter {key!r} is {raw!r}; expected true/false (or 1/0)"
    )


def param_int(spec: ModelSpec, key: str, default: int, *, minimum: int = 0) -> int:
    """An integer config parameter, at least ``minimum``."""
    raw = spec.parameters.get(key)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise RepositoryError(
            f"model {spec.name!r}: parameter {key!r} is {raw!r}; expected an integer >= {minimum}"
        )
    return value


def param_choice(spec: ModelSpec, key: str, choices: tuple[str, ...], default: str) -> str:
    """A config parameter that must be one of ``choices`` (case-insensitive)."""
    raw = spec.parameters.get(key)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value not in choices:
        raise RepositoryError(
            f"model {spec.name!r}: parameter {key!r} is {raw!r}; expected one of {', '.join(choices)}"
        )
    return value


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
