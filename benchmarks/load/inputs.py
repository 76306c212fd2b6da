"""Request inputs for the Locust users: real data for the demo models, shaped from metadata.

* ``digits``: held-out-style images from scikit-learn's bundled 8x8 digits, scaled to
  [0, 1] as the demo export expects ([N, 1, 8, 8] FP32).
* ``minilm``: real sentences tokenized with the checkpoint's own tokenizer
  (:func:`rayfront.export.demos.minilm.tokenize`).
* any model: arrays from ``--inputs-npz`` (one array per input name), or random data of
  the dtype and shape the server's model metadata declares.

Rows are cycled to reach the requested batch size, so any batch size works.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rayfront.dtypes import to_numpy
from rayfront.errors import InvalidArgumentError
from rayfront.tensors import TensorDict

logger = logging.getLogger(__name__)


SENTENCES: tuple[str, ...] = (
    "A man is playing a guitar.",
    "Someone is playing an instrument.",
    "The stock market fell sharply today.",
    "Shares dropped on Wall Street.",
    "The new movie is awesome.",
    "A cat sits on the warm windowsill.",
    "Rain is expected over the weekend.",
    "The team won the championship last night.",
)
# Size used for a dynamic non-batch dim when nothing else says how long it should be.
DEFAULT_DYNAMIC = 16


@dataclass(frozen=True, slots=True)
class InputMeta:
    """One input as the server's model metadata declares it (shape includes batch -1)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


def specs_from_http_metadata(meta: dict[str, Any]) -> list[InputMeta]:
    """Inputs from a KServe v2 ``GET /v2/models/{name}`` JSON answer."""
    try:
        return [
            InputMeta(i["name"], i["datatype"], tuple(int(d) for d in i["shape"]))
            for i in meta["inputs"]
        ]
    except (KeyError, TypeError, ValueError) as err:
        raise InvalidArgumentError(
            f"model metadata has no usable 'inputs' list ({err}): {meta}"
        ) from None


def specs_from_grpc_metadata(meta: Any) -> list[InputMeta]:
    """Inputs from a ``ModelMetadataResponse`` protobuf."""
    return [InputMeta(i.name, i.datatype, tuple(int(d) for d in i.shape)) for i in meta.inputs]


def _cycle(arr: np.ndarray, rows: int) -> np.ndarray:
    reps = -(-rows // arr.shape[0])
    return np.concatenate([arr] * reps, axis=0)[:rows] if reps > 1 else arr[:rows]


@functools.cache
def _digit_images() -> np.ndarray:
    # Every Locust user asks for inputs at start; load the dataset once per process.
    from sklearn.datasets import load_digits

    return (load_digits().images / 16.0).astype(np.float32)[:, None, :, :]


def _digits(rows: int) -> TensorDict:
    return {"pixels": np.ascontiguousarray(_cycle(_digit_images(), rows))}


def _minilm(rows: int) -> TensorDict:
    from rayfront.export.demos.minilm import tokenize

    texts = [SENTENCES[i % len(SENTENCES)] for i in range(rows)]
    return {k: np.ascontiguousarray(v) for k, v in tokenize(texts).items()}


DEMO_INPUTS: dict[str, Callable[[int], TensorDict]] = {"digits": _digits, "minilm": _minilm}


def random_inputs(specs: Sequence[InputMeta], rows: int, seed: int = 0) -> TensorDict:
    """Random tensors of each declared dtype; the leading -1 becomes ``rows``."""
    rng = np.random.default_rng(seed)
    out: TensorDict = {}
    for spec in specs:
        dims = list(spec.shape)
        if dims and dims[0] == -1:
            dims[0] = rows
        dims = [DEFAULT_DYNAMIC if d == -1 else d for d in dims]
        dtype = to_numpy(spec.datatype)
        if dtype.kind == "f":
            out[spec.name] = rng.standard_normal(dims).astype(dtype)
        elif dtype.kind == "b":
            out[spec.name] = rng.integers(0, 2, dims).astype(dtype)
        elif dtype.kind in "iu":
            out[spec.name] = rng.integers(0, 100, dims).astype(dtype)
        else:
            raise InvalidArgumentError(
                f"input {spec.name!r}: cannot make random {spec.datatype} data; pass --inputs-npz"
            )
    return out


def npz_inputs(path: Path, specs: Sequence[InputMeta], rows: int) -> TensorDict:
    """Arrays named like the inputs from an ``.npz`` file, rows cycled to ``rows``."""
    with np.load(path) as data:
        missing = [s.name for s in specs if s.name not in data]
        if missing:
            raise InvalidArgumentError(
                f"{path}: no arrays for inputs {missing}; it has {sorted(data.files)}"
            )
        return {s.name: np.ascontiguousarray(_cycle(data[s.name], rows)) for s in specs}


def make_inputs(
    model: str,
    specs: Sequence[InputMeta],
    rows: int,
    npz: Path | None = None,
    seed: int = 0,
) -> TensorDict:
    """Inputs for one request of ``rows`` rows: npz, else demo data, else random."""
    if rows < 1:
        raise InvalidArgumentError(f"batch size must be >= 1, got {rows}")
    if npz is not None:
        return npz_inputs(npz, specs, rows)
    maker = DEMO_INPUTS.get(model)
    if maker is not None:
        try:
            data = maker(rows)
        except ImportError as err:
            logger.warning("real inputs for %r unavailable (%s); sending random data", model, err)
        else:
            names = {s.name for s in specs}
            if names and names == set(data):
                return data
            logger.warning(
                "model %r declares inputs %s, demo data has %s; sending random data",
                model,
                sorted(names),
                sorted(data),
            )
    return random_inputs(specs, rows, seed)
