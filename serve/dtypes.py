"""Tensor data types: Triton/KServe names, ModelConfig enum names, numpy, ONNX and torch.

KServe v2 names (``FP32``) are the canonical form; everything else converts through them.
torch is imported lazily so serving processes never load it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rayfront.errors import InvalidArgumentError

# KServe v2 / Triton datatype name -> numpy dtype. BYTES is numpy object (bytes per element).
_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
_FROM_NUMPY: dict[np.dtype, str] = {v: k for k, v in _TO_NUMPY.items()}
# bytes/str arrays from user code are BYTES too.
_FROM_NUMPY[np.dtype("S")] = "BYTES"

DATATYPES: tuple[str, ...] = tuple(_TO_NUMPY)

# ONNX TensorProto.DataType values (kept numeric so this module does not import onnx).
_ONNX: dict[str, int] = {
    "FP32": 1,
    "UINT8": 2,
    "INT8": 3,
    "UINT16": 4,
    "INT16": 5,
    "INT32": 6,
    "INT64": 7,
    "BYTES": 8,
    "BOOL": 9,
    "FP16": 10,
    "FP64": 11,
    "UINT32": 12,
    "UINT64": 13,
}
_FROM_ONNX: dict[int, str] = {v: k for k, v in _ONNX.items()}

_TORCH_NAMES: dict[str, str] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
}


def check_datatype(datatype: str) -> str:
    """Return ``datatype`` upper-cased if it is a KServe v2 name, else raise."""
    name = datatype.upper()
    if name not in _TO_NUMPY:
        raise InvalidArgumentError(
            f"unsupported datatype {datatype!r}; expected one of {', '.join(DATATYPES)}"
        )
    return name


def to_numpy(datatype: str) -> np.dtype:
    """numpy dtype for a KServe v2 datatype name (``FP32`` -> float32)."""
    return _TO_NUMPY[check_datatype(datatype)]


def from_numpy(dtype: np.dtype | type) -> str:
    """KServe v2 datatype name for a numpy dtype."""
    dt = np.dtype(dtype)
    if dt.kind in ("S", "U", "O"):
        return "BYTES"
    if not dt.isnative:  # byte order says nothing about the datatype
        dt = dt.newbyteorder("=")
    try:
        return _FROM_NUMPY[dt]
    except KeyError:
        raise InvalidArgumentError(f"numpy dtype {dt} has no KServe v2 datatype") from None


def to_config_enum(datatype: str) -> str:
    """ModelConfig DataType enum name: ``FP32`` -> ``TYPE_FP32``, ``BYTES`` -> ``TYPE_STRING``."""
    name = check_datatype(datatype)
    return "TYPE_STRING" if name == "BYTES" else f"TYPE_{name}"


def from_config_enum(enum_name: str) -> str:
    """KServe v2 datatype from a ModelConfig DataType enum name."""
    if enum_name == "TYPE_STRING":
        return "BYTES"
    if not enum_name.startswith("TYPE_"):
        raise InvalidArgumentError(f"not a ModelConfig data type: {enum_name!r}")
    return check_datatype(enum_name.removeprefix("TYPE_"))


def to_onnx(datatype: str) -> int:
    """ONNX ``TensorProto`` elem_type for a KServe v2 datatype."""
    return _ONNX[check_datatype(datatype)]


def from_onnx(elem_type: int) -> str:
    """KServe v2 datatype for an ONNX ``TensorProto`` elem_type."""
    try:
        return _FROM_ONNX[elem_type]
    except KeyError:
        raise InvalidArgumentError(f"ONNX element type {elem_type} is not supported") from None


def from_ort(type_str: str) -> str:
    """KServe v2 datatype from an ONNX Runtime type string such as ``tensor(float)``."""
    inner = type_str.removeprefix("tensor(").removesuffix(")")
    table = {
        "float": "FP32",
        "float16": "FP16",
        "double": "FP64",
        "bool": "BOOL",
        "string": "BYTES",
        "int8": "INT8",
        "int16": "INT16",
        "int32": "INT32",
        "int64": "INT64",
        "uint8": "UINT8",
        "uint16": "UINT16",
        "uint32": "UINT32",
        "uint64": "UINT64",
    }
    try:
        return table[inner]
    except KeyError:
        raise InvalidArgumentError(f"ONNX Runtime type {type_str!r} is not supported") from None


def to_torch(datatype: str) -> Any:
    """torch dtype for a KServe v2 datatype (imports torch; export side only)."""
    import torch

    name = check_datatype(datatype)
    if name == "BYTES":
        raise InvalidArgumentError("BYTES tensors have no torch dtype; export needs numeric inputs")
    return getattr(torch, _TORCH_NAMES[name])


def element_size(datatype: str) -> int:
    """Bytes per element; 0 for variable-size BYTES."""
    name = check_datatype(datatype)
    return 0 if name == "BYTES" else _TO_NUMPY[name].itemsize
