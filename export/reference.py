"""The reference profile written into a version's sidecar for live drift monitoring.

From the user's sample (``--reference data.npz``: one array per model input, rows first),
run through the PyTorch model in ``max_batch_size`` chunks so the outputs are profiled too;
else from the parity check's random-valued cases, whose profile only tells live data
apart from random noise (the sidecar's ``source`` says which).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from rayfront.drift import ReferenceProfile, profile_sample
from rayfront.dtypes import to_numpy
from rayfront.errors import ExportError
from rayfront.export.request import ExportRequest

PARITY_SOURCE = "parity inputs (random case); pass --reference for real data"


def load_reference(request: ExportRequest) -> dict[str, np.ndarray]:
    """The ``--reference`` arrays, checked against the model's inputs."""
    path = request.reference_data
    assert path is not None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError) as exc:
        raise ExportError(f"--reference {path}: cannot read it as .npz: {exc}") from None
    model = request.name
    missing = [t.name for t in request.inputs if t.name not in arrays]
    if missing:
        raise ExportError(
            f"--reference {path}: model {model!r} needs arrays named after its inputs; "
            f"missing {', '.join(map(repr, missing))} (found {', '.join(arrays) or 'none'})"
        )
    out: dict[str, np.ndarray] = {}
    rows: set[int] = set()
    for t in request.inputs:
        arr = arrays[t.name]
        dims = tuple(t.dims)
        per_row = arr.shape[1:] if request.max_batch_size > 0 else arr.shape
        if len(per_row) != len(dims) or any(
            d not in (-1, s) for d, s in zip(dims, per_row, strict=False)
        ):
            raise ExportError(
                f"--reference {path}: array {t.name!r} of model {model!r} has rows of shape "
                f"{list(per_row)}, the input expects {list(dims)}"
            )
        out[t.name] = np.ascontiguousarray(arr, dtype=to_numpy(t.datatype))
        rows.add(int(arr.shape[0]))
    if len(rows) != 1 or 0 in rows:
        raise ExportError(
            f"--reference {path}: every array needs the same, non-zero number of rows "
            f"(got {sorted(rows)})"
        )
    return out


def reference_profile(
    request: ExportRequest,
    run: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]],
    cases: Sequence[Any],
    references: Sequence[Mapping[str, np.ndarray]],
    output_names: Sequence[str],
) -> ReferenceProfile:
    """Profile the reference sample's inputs and PyTorch's outputs on it."""
    if request.reference_data is None:
        random = [i for i, c in enumerate(cases) if c.case.startswith("random")]

        def row_shapes(i: int) -> tuple[tuple[int, ...], ...]:
            return tuple(cases[i].feeds[t.name].shape[1:] for t in request.inputs)

        # Cases of one per-row shape (dynamic dims vary across cases): they concatenate.
        picked = [i for i in random if row_shapes(i) == row_shapes(random[0])]
        inputs = {
            t.name: np.concatenate([cases[i].feeds[t.name] for i in picked]) for t in request.inputs
        }
        outputs = {
            n: np.concatenate([np.asarray(references[i][n]) for i in picked]) for n in output_names
        }
        return profile_sample(PARITY_SOURCE, inputs, outputs)
    inputs = load_reference(request)
    rows = int(next(iter(inputs.values())).shape[0])
    step = max(request.max_batch_size, 1) if request.max_batch_size > 0 else rows
    parts: list[Mapping[str, np.ndarray]] = []
    for start in range(0, rows, step):
        chunk = {n: a[start : start + step] for n, a in inputs.items()}
        try:
            parts.append(run(chunk))
        except Exception as exc:
            raise ExportError(
                f"--reference {request.reference_data}: PyTorch forward() of model "
                f"{request.name!r} fails on rows {start}-{start + step - 1}: {exc}"
            ) from None
    outputs = {n: np.concatenate([np.asarray(p[n]) for p in parts]) for n in output_names}
    return profile_sample(f"file {request.reference_data.name} ({rows} rows)", inputs, outputs)
