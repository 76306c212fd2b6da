"""Input/output signature comparison: a canary must accept and return what the stable does.

A signature is whatever the gateway's ``signature_of(model, version)`` returns; accepted
shapes are a :class:`rayfront.spec.ModelSpec` (or any object with ``inputs``/``outputs``
sequences of objects with ``name``, ``datatype`` and ``dims``/``shape``), or a KServe v2
model-metadata dict (``{"inputs": [{"name", "datatype", "shape"}], "outputs": [...]}``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

TensorSig = dict[str, tuple[str, tuple[int, ...]]]


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def _tensors(items: Sequence[Any] | None) -> TensorSig:
    out: TensorSig = {}
    for item in items or ():
        dims = _field(item, "dims")
        if dims is None:
            dims = _field(item, "shape")
        out[str(_field(item, "name"))] = (
            str(_field(item, "datatype")),
            tuple(int(d) for d in (dims or ())),
        )
    return out


def normalize(signature: Any) -> tuple[TensorSig, TensorSig]:
    """(inputs, outputs) as ``{name: (datatype, dims)}``."""
    return _tensors(_field(signature, "inputs")), _tensors(_field(signature, "outputs"))


def _diff_side(kind: str, stable: TensorSig, canary: TensorSig) -> list[str]:
    diffs: list[str] = []
    for name in sorted(stable.keys() - canary.keys()):
        diffs.append(f"{kind} {name!r} is missing from the canary")
    for name in sorted(canary.keys() - stable.keys()):
        diffs.append(f"{kind} {name!r} exists only in the canary")
    for name in sorted(stable.keys() & canary.keys()):
        (sd, ss), (cd, cs) = stable[name], canary[name]
        if sd != cd:
            diffs.append(f"{kind} {name!r}: stable datatype {sd}, canary {cd}")
        if ss != cs:
            diffs.append(f"{kind} {name!r}: stable shape {list(ss)}, canary {list(cs)}")
    return diffs


def signature_diff(stable: Any, canary: Any) -> list[str]:
    """Human-readable differences between two signatures; empty when compatible."""
    s_in, s_out = normalize(stable)
    c_in, c_out = normalize(canary)
    return _diff_side("input", s_in, c_in) + _diff_side("output", s_out, c_out)
