"""Parse the ``--input``, ``--output`` and ``--trt-shape`` specs of ``rayfront export``.

Grammar (shapes follow Triton's ``dims``: when the model batches, i.e. ``--max-batch-size``
is above 0, the batch dim is implicit and the shape leaves it out)::

    --input   NAME:DTYPE:SHAPE         pixels:FP32:1,8,8     input_ids:INT64:-1
    --output  NAME[:DTYPE:SHAPE]       logits                logits:FP32:10
    --trt-shape NAME:MIN/OPT/MAX       input_ids:1/128/256   image:3,32,32/3,224,224/3,512,512

``DTYPE`` is a KServe v2 / Triton name (FP32, FP16, INT64, INT32, BOOL, ...). ``SHAPE`` is
comma separated; each dim is a positive integer or ``-1`` for a dynamic size. Every
malformed spec raises :class:`~rayfront.errors.InputSpecError` quoting the spec and the rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

from rayfront.dtypes import DATATYPES
from rayfront.errors import InputSpecError
from rayfront.spec import Dims, TensorSpec

# Names travel into ONNX graphs, TensorRT bindings and config.pbtxt; keep them to a
# portable identifier-like set so none of those tools rejects or mangles them.
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_NAME_RULE = "letters, digits, '_', '.', '-', not starting with a digit, '.' or '-'"

# BYTES has no torch dtype and cannot be an input of a traced graph.
EXPORTABLE_DATATYPES: tuple[str, ...] = tuple(d for d in DATATYPES if d != "BYTES")

INPUT_FORMAT = "NAME:DTYPE:SHAPE (e.g. pixels:FP32:1,8,8)"
OUTPUT_FORMAT = "NAME or NAME:DTYPE:SHAPE (e.g. logits or logits:FP32:10)"
TRT_SHAPE_FORMAT = "NAME:MIN/OPT/MAX with comma-separated shapes (e.g. input_ids:1/128/256)"


class OutputSpec(BaseModel):
    """An ``--output``: the name is required, datatype and dims are checked when given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Output tensor name in the exported graph.")
    datatype: str | None = Field(
        default=None, description="Expected KServe v2 datatype; None = take the model's."
    )
    dims: Dims | None = Field(
        default=None, description="Expected dims without the batch dim; None = take the model's."
    )


class ShapeRange(BaseModel):
    """A ``--trt-shape`` override: min/opt/max of one input's per-request shape."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Input the range applies to.")
    min: Dims = Field(description="Smallest shape (batch dim excluded).")
    opt: Dims = Field(description="Shape TensorRT tunes kernels for (batch dim excluded).")
    max: Dims = Field(description="Largest shape (batch dim excluded).")


def _check_name(name: str, spec: str, what: str, fmt: str) -> str:
    if not name:
        raise InputSpecError(f"{what} spec {spec!r}: missing tensor name; expected {fmt}")
    if not _NAME.match(name):
        raise InputSpecError(
            f"{what} spec {spec!r}: tensor name {name!r} is not allowed; use {_NAME_RULE}"
        )
    return name


def _check_datatype(datatype: str, spec: str, what: str) -> str:
    name = datatype.strip().upper()
    if name == "BYTES":
        raise InputSpecError(
            f"{what} spec {spec!r}: datatype BYTES (strings) cannot be exported from PyTorch; "
            f"expected one of {', '.join(EXPORTABLE_DATATYPES)}"
        )
    if name not in EXPORTABLE_DATATYPES:
        raise InputSpecError(
            f"{what} spec {spec!r}: unsupported datatype {datatype!r}; "
            f"expected one of {', '.join(EXPORTABLE_DATATYPES)}"
        )
    return name


def parse_shape(text: str, *, spec: str, what: str = "input", allow_dynamic: bool = True) -> Dims:
    """Parse ``1,8,8`` / ``-1,16`` into a dims tuple; every dim positive (or -1 if allowed)."""
    if not text.strip():
        raise InputSpecError(
            f"{what} spec {spec!r}: empty shape; give the dims without the batch dim, "
            "comma separated, e.g. 1,8,8 (use -1 for a dynamic dim)"
        )
    dims: list[int] = []
    for part in text.split(","):
        token = part.strip()
        try:
            dim = int(token)
        except ValueError:
            raise InputSpecError(
                f"{what} spec {spec!r}: dim {token!r} is not an integer; "
                "dims are positive integers or -1 (dynamic), comma separated"
            ) from None
        if dim == -1 and not allow_dynamic:
            raise InputSpecError(
                f"{what} spec {spec!r}: dim -1 is not allowed here; give concrete sizes"
            )
        if dim == 0 or dim < -1:
            raise InputSpecError(
                f"{what} spec {spec!r}: dim {dim} is invalid; dims are positive integers "
                "or -1 (dynamic)"
            )
        dims.append(dim)
    return tuple(dims)


def parse_input_spec(spec: str) -> TensorSpec:
    """``NAME:DTYPE:SHAPE`` -> :class:`~rayfront.spec.TensorSpec` (dims exclude the batch dim)."""
    parts = spec.split(":")
    if len(parts) != 3:
        raise InputSpecError(
            f"input spec {spec!r}: expected 3 ':'-separated fields {INPUT_FORMAT}, got {len(parts)}"
        )
    name, datatype, shape = (p.strip() for p in parts)
    return TensorSpec(
        name=_check_name(name, spec, "input", INPUT_FORMAT),
        datatype=_check_datatype(datatype, spec, "input"),
        dims=parse_shape(shape, spec=spec),
    )


def parse_output_spec(spec: str) -> OutputSpec:
    """``NAME`` or ``NAME:DTYPE:SHAPE`` -> :class:`OutputSpec`."""
    parts = spec.split(":")
    if len(parts) == 1:
        return OutputSpec(name=_check_name(parts[0].strip(), spec, "output", OUTPUT_FORMAT))
    if len(parts) != 3:
        raise InputSpecError(
            f"output spec {spec!r}: expected {OUTPUT_FORMAT}, got {len(parts)} ':'-separated fields"
        )
    name, datatype, shape = (p.strip() for p in parts)
    return OutputSpec(
        name=_check_name(name, spec, "output", OUTPUT_FORMAT),
        datatype=_check_datatype(datatype, spec, "output"),
        dims=parse_shape(shape, spec=spec, what="output"),
    )


def parse_trt_shape(spec: str) -> ShapeRange:
    """``NAME:MIN/OPT/MAX`` -> :class:`ShapeRange`, with min <= opt <= max per dim."""
    name, sep, ranges = spec.partition(":")
    if not sep:
        raise InputSpecError(f"--trt-shape {spec!r}: expected {TRT_SHAPE_FORMAT}")
    name = _check_name(name.strip(), spec, "--trt-shape", TRT_SHAPE_FORMAT)
    shapes = ranges.split("/")
    if len(shapes) != 3:
        raise InputSpecError(
            f"--trt-shape {spec!r}: expected three '/'-separated shapes MIN/OPT/MAX, "
            f"got {len(shapes)}"
        )
    lo, opt, hi = (
        parse_shape(s, spec=spec, what="--trt-shape", allow_dynamic=False) for s in shapes
    )
    if not len(lo) == len(opt) == len(hi):
        raise InputSpecError(
            f"--trt-shape {spec!r}: MIN, OPT and MAX must have the same number of dims, "
            f"got {len(lo)}, {len(opt)}, {len(hi)}"
        )
    for i, (a, b, c) in enumerate(zip(lo, opt, hi, strict=True)):
        if not a <= b <= c:
            raise InputSpecError(
                f"--trt-shape {spec!r}: dim {i} must satisfy MIN <= OPT <= MAX, got {a}/{b}/{c}"
            )
    return ShapeRange(name=name, min=lo, opt=opt, max=hi)


def check_unique(names: Iterable[str], what: str) -> None:
    """Raise when a tensor name is given twice (``--input x:... --input x:...``)."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InputSpecError(f"{what} {name!r} is given more than once; names must be unique")
        seen.add(name)


def check_trt_shapes(
    ranges: Iterable[ShapeRange], inputs: Iterable[TensorSpec]
) -> dict[str, ShapeRange]:
    """Match ``--trt-shape`` overrides to inputs: known name, same rank, static dims kept."""
    by_name = {t.name: t for t in inputs}
    out: dict[str, ShapeRange] = {}
    for r in ranges:
        tensor = by_name.get(r.name)
        if tensor is None:
            raise InputSpecError(
                f"--trt-shape for {r.name!r}: no such input; inputs are {sorted(by_name)}"
            )
        if r.name in out:
            raise InputSpecError(f"--trt-shape for {r.name!r} is given more than once")
        if len(r.min) != len(tensor.dims):
            raise InputSpecError(
                f"--trt-shape for {r.name!r}: {len(r.min)} dims given, but input {r.name!r} "
                f"has {len(tensor.dims)} dims {list(tensor.dims)} (batch dim excluded)"
            )
        for i, dim in enumerate(tensor.dims):
            if dim != -1 and not r.min[i] == r.opt[i] == r.max[i] == dim:
                raise InputSpecError(
                    f"--trt-shape for {r.name!r}: dim {i} is static ({dim}) in the input spec, "
                    f"so MIN/OPT/MAX must all be {dim}, got {r.min[i]}/{r.opt[i]}/{r.max[i]}"
                )
        out[r.name] = r
    return out
