"""Check a decoded request against the model's declared inputs and outputs.

Runs before anything is queued, so a malformed request costs one cheap pass over its
tensors' metadata and never reaches a batch. Every message names the input, the model,
what was expected and what arrived.
"""

from __future__ import annotations

from collections.abc import Sequence

from rayfront.dtypes import from_numpy
from rayfront.errors import InvalidArgumentError
from rayfront.protocol.types import InferRequest
from rayfront.spec import ModelSpec


def _fmt(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _names(items: Sequence[object]) -> str:
    return ", ".join(repr(getattr(t, "name", t)) for t in items) or "none"


def validate_request(request: InferRequest, spec: ModelSpec) -> int:
    """Raise InvalidArgumentError unless ``request`` fits ``spec``; return its rows.

    The rows are dim 0 shared by the inputs for a batching model, else 1 (also when every
    input is optional and omitted).

    Checks: no unknown inputs, every non-optional input present, dtype, rank and fixed
    dims (``-1`` is free), batch dim within ``max_batch_size`` and equal across inputs,
    and every requested output known.
    """
    model = spec.name
    declared = {t.name: t for t in spec.inputs}
    for name in request.inputs:
        if name not in declared:
            raise InvalidArgumentError(
                f"input '{name}' of model '{model}': unexpected input; the model's inputs "
                f"are {_names(spec.inputs)}"
            )
    for t in spec.inputs:
        if not t.optional and t.name not in request.inputs:
            raise InvalidArgumentError(
                f"input '{t.name}' of model '{model}': missing required input "
                f"({t.datatype}{_fmt(t.full_shape(spec.max_batch_size))})"
            )

    batching = spec.max_batch_size > 0
    batch: int | None = None
    batch_from = ""
    for name, arr in request.inputs.items():
        t = declared[name]
        got_dtype = from_numpy(arr.dtype)
        if got_dtype != t.datatype:
            raise InvalidArgumentError(
                f"input '{name}' of model '{model}': expected dtype {t.datatype}, got {got_dtype}"
            )
        expected = t.full_shape(spec.max_batch_size)
        shape = arr.shape
        if len(shape) != len(expected) or any(
            e != -1 and e != g for e, g in zip(expected, shape, strict=True)
        ):
            raise InvalidArgumentError(
                f"input '{name}' of model '{model}': expected shape {_fmt(expected)}, "
                f"got {_fmt(shape)}"
            )
        if batching:
            b = shape[0]
            if b < 1:
                raise InvalidArgumentError(
                    f"input '{name}' of model '{model}': batch size must be at least 1, got {b}"
                )
            if b > spec.max_batch_size:
                raise InvalidArgumentError(
                    f"input '{name}' of model '{model}': batch size {b} exceeds the model's "
                    f"max_batch_size {spec.max_batch_size}"
                )
            if batch is None:
                batch, batch_from = b, name
            elif b != batch:
                raise InvalidArgumentError(
                    f"input '{name}' of model '{model}': batch size {b} differs from input "
                    f"'{batch_from}' batch size {batch}; all inputs must share dim 0"
                )

    if request.outputs:
        known = {t.name for t in spec.outputs}
        seen: set[str] = set()
        for out in request.outputs:
            if out.name in seen:
                raise InvalidArgumentError(
                    f"output '{out.name}' of model '{model}': requested more than once"
                )
            seen.add(out.name)
            if out.name not in known:
                raise InvalidArgumentError(
                    f"output '{out.name}' of model '{model}': unknown output; the model's "
                    f"outputs are {_names(spec.outputs)}"
                )
    return batch if batch is not None else 1
