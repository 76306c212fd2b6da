"""Parity check: does an exported artifact compute what the PyTorch model computes?

The same cases run through PyTorch (the reference) and through a candidate runner (ONNX
Runtime's CPU provider, a TensorRT engine, a TorchScript module). Cases cover batch 1, a
middle size and ``max_batch_size``; random values plus edge cases per dtype (zeros, large
magnitudes for floats); and every dynamic non-batch dim at two sizes. Within one case all
dynamic non-batch dims take the same size, so inputs that must agree on a dim (token ids and
their attention mask) stay consistent.

A value passes when ``|candidate - reference| <= atol + rtol * |reference|`` (numpy
``allclose``; NaNs and same-signed infinities compare equal). Each (format, batch, case)
gives one :class:`~rayfront.repository.sidecar.ParityRecord` with the worst errors over all
outputs; any failure raises :class:`~rayfront.errors.ParityError` naming the model, output,
batch, case, and error against tolerance.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from rayfront.dtypes import to_numpy
from rayfront.errors import ParityError
from rayfront.repository.sidecar import ParityRecord
from rayfront.spec import TensorSpec
from rayfront.tensors import TensorDict

logger = logging.getLogger(__name__)

Runner = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]
# (case kind, full shape including batch, rng) -> array of that shape; lets a model's
# author supply valid values, e.g. token ids below the vocabulary size.
InputGenerator = Callable[[str, tuple[int, ...], np.random.Generator], np.ndarray]
Format = Literal["onnx", "tensorrt", "torchscript"]

DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-3
# Sizes for dynamic non-batch dims when no --trt-shape range says otherwise.
DEFAULT_DYNAMIC_SIZES: tuple[int, int] = (3, 7)
LARGE_MAGNITUDE = 1e3
# Integers default to [0, 2): valid as an index into any embedding, as a mask, as a flag.
DEFAULT_INT_HIGH = 2


@dataclass(frozen=True)
class ParityCase:
    """One set of inputs fed to both PyTorch and the candidate."""

    case: str
    batch_size: int  # 0 when the model does not batch
    feeds: TensorDict = field(repr=False)


@dataclass(frozen=True)
class _OutputDiff:
    name: str
    max_abs: float
    max_rel: float
    passed: bool
    worst_ref: float  # reference value at the worst violation, for the message


def parity_batch_sizes(max_batch_size: int, requested: Sequence[int] = ()) -> list[int]:
    """Batch sizes to check: ``requested``, else 1, the middle and ``max_batch_size``.

    A model that does not batch (``max_batch_size == 0``) gets ``[0]``: one unbatched run.
    """
    if max_batch_size == 0:
        return [0]
    if requested:
        bad = [b for b in requested if not 1 <= b <= max_batch_size]
        if bad:
            raise ValueError(
                f"parity batch sizes {bad} are outside 1..max_batch_size ({max_batch_size})"
            )
        return sorted(set(requested))
    return sorted({1, max(1, max_batch_size // 2), max_batch_size})


def _dim_variants(
    inputs: Sequence[TensorSpec], ranges: Mapping[str, tuple[Sequence[int], Sequence[int]]]
) -> list[tuple[str, dict[str, tuple[int, ...]]]]:
    """Per-request shapes for each dynamic-size variant: [(label, {input: dims})]."""
    if not any(-1 in t.dims for t in inputs):
        return [("", {t.name: tuple(t.dims) for t in inputs})]
    variants = []
    for idx, label in enumerate(("dyn-small", "dyn-large")):
        shapes = {}
        for t in inputs:
            bounds = ranges.get(t.name)
            shapes[t.name] = tuple(
                (bounds[idx][i] if bounds is not None else DEFAULT_DYNAMIC_SIZES[idx])
                if d == -1
                else d
                for i, d in enumerate(t.dims)
            )
        variants.append((label, shapes))
    return variants


def default_values(
    datatype: str, kind: str, shape: tuple[int, ...], rng: np.random.Generator
) -> np.ndarray:
    """Values for one input in one case kind: ``random``, ``zeros`` or ``large``."""
    dtype = to_numpy(datatype)
    if kind == "zeros":
        return np.zeros(shape, dtype=dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, DEFAULT_INT_HIGH, size=shape).astype(dtype)
    if kind == "large":
        # Every element large (|x| in [LARGE/10, LARGE]), with random signs.
        magnitude = rng.uniform(LARGE_MAGNITUDE / 10, LARGE_MAGNITUDE, size=shape)
        return (magnitude * rng.choice([-1.0, 1.0], size=shape)).astype(dtype)
    return rng.standard_normal(size=shape).astype(dtype)


def make_cases(
    inputs: Sequence[TensorSpec],
    max_batch_size: int,
    *,
    batch_sizes: Sequence[int] = (),
    generators: Mapping[str, InputGenerator] | None = None,
    dynamic_ranges: Mapping[str, tuple[Sequence[int], Sequence[int]]] | None = None,
    seed: int = 0,
) -> list[ParityCase]:
    """All parity cases for a model with these inputs.

    ``dynamic_ranges`` maps an input to (smallest, largest) per-request shapes; its dynamic
    dims are then checked at those sizes (TensorRT profiles must contain every case).
    """
    generators = dict(generators or {})
    unknown = set(generators) - {t.name for t in inputs}
    if unknown:
        raise ValueError(f"input generators for unknown inputs {sorted(unknown)}")
    rng = np.random.default_rng(seed)
    kinds = ["random", "zeros"]
    if any(np.issubdtype(to_numpy(t.datatype), np.floating) for t in inputs):
        kinds.append("large")
    cases = []
    for batch in parity_batch_sizes(max_batch_size, batch_sizes):
        for label, shapes in _dim_variants(inputs, dynamic_ranges or {}):
            for kind in kinds:
                feeds: TensorDict = {}
                for t in inputs:
                    shape = (batch, *shapes[t.name]) if max_batch_size > 0 else shapes[t.name]
                    gen = generators.get(t.name)
                    value = (
                        gen(kind, shape, rng)
                        if gen
                        else default_values(t.datatype, kind, shape, rng)
                    )
                    feeds[t.name] = np.ascontiguousarray(value, dtype=to_numpy(t.datatype))
                    if feeds[t.name].shape != shape:
                        raise ValueError(
                            f"input generator for {t.name!r} returned shape "
                            f"{feeds[t.name].shape}, expected {shape}"
                        )
                cases.append(ParityCase(f"{kind}/{label}" if label else kind, batch, feeds))
    return cases


def atol_scale(ref: np.ndarray) -> float:
    """What ``atol`` is multiplied by for one output: ``max(1, max|finite ref|)``.

    Every precision rounds each summand of a dot product, so an output's error follows the
    magnitude of the tensor, not of the element: a near-zero result of large, cancelling
    terms is as wrong as its neighbours (fp32 logits of magnitude 2e4 on the large-input
    case differ by 6e-3 = 2.5e-7 of the tensor between two correct kernels). Outputs of
    magnitude <= 1 keep the plain atol.
    """
    ref64 = np.asarray(ref, dtype=np.float64)
    finite = np.abs(ref64[np.isfinite(ref64)])
    return max(1.0, float(finite.max(initial=0.0)))


def _diff(name: str, ref: np.ndarray, got: np.ndarray, atol: float, rtol: float) -> _OutputDiff:
    ref64 = np.asarray(ref, dtype=np.float64)
    got64 = np.asarray(got, dtype=np.float64)
    atol *= atol_scale(ref64)
    close = np.isclose(got64, ref64, atol=atol, rtol=rtol, equal_nan=True)
    with np.errstate(invalid="ignore", over="ignore"):
        abs_err = np.abs(got64 - ref64)
    # Elements that are "equal" as allclose sees them (NaN vs NaN, inf vs inf) carry no error.
    abs_err = np.where(close & ~np.isfinite(abs_err), 0.0, abs_err)
    abs_err = np.nan_to_num(abs_err, nan=np.inf)
    # Relative error only where the reference is above atol: below it, dividing by ~0
    # says nothing and atol is what judges those values.
    floor = max(atol, float(np.finfo(np.float32).tiny))
    big = np.abs(ref64) > floor
    rel = np.where(big, abs_err / np.where(big, np.abs(ref64), 1.0), 0.0)
    passed = bool(close.all())
    worst_ref = 0.0
    if not passed:
        excess = np.where(close, -np.inf, abs_err - (atol + rtol * np.abs(np.nan_to_num(ref64))))
        worst_ref = float(ref64.flat[int(np.argmax(excess))])
    return _OutputDiff(
        name,
        float(abs_err.max(initial=0.0)),
        float(rel.max(initial=0.0)),
        passed,
        worst_ref,
    )


def check_parity(
    *,
    model_name: str,
    fmt: Format,
    candidate: Runner,
    cases: Sequence[ParityCase],
    references: Sequence[Mapping[str, np.ndarray]],
    output_names: Sequence[str],
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    raise_on_failure: bool = True,
    precision: str = "fp32",
) -> list[ParityRecord]:
    """Compare ``candidate`` against the PyTorch ``references`` on every case.

    Returns one record per case. With ``raise_on_failure`` a case outside tolerance raises
    :class:`ParityError` (its ``records`` attribute keeps the full list); a candidate that
    cannot run a case, or returns a wrong shape, always raises.
    """
    if len(references) != len(cases):
        raise ValueError(f"{len(cases)} cases but {len(references)} reference results")
    records: list[ParityRecord] = []
    failures: list[tuple[ParityCase, _OutputDiff]] = []
    for case, ref in zip(cases, references, strict=True):
        try:
            got = candidate(case.feeds)
        except ParityError:
            raise
        except Exception as err:  # a runtime refusing the inputs is a parity failure
            raise ParityError(
                f"model {model_name!r}: {fmt} run failed at batch {case.batch_size}, case "
                f"{case.case!r}: {type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
            ) from err
        diffs = []
        for name in output_names:
            if name not in got:
                raise ParityError(
                    f"model {model_name!r}: {fmt} result has no output {name!r} (got {sorted(got)})"
                )
            r, g = np.asarray(ref[name]), np.asarray(got[name])
            if r.shape != g.shape:
                raise ParityError(
                    f"model {model_name!r}: {fmt} output {name!r} at batch {case.batch_size}, "
                    f"case {case.case!r} has shape {list(g.shape)}, PyTorch gives {list(r.shape)}"
                )
            diffs.append(_diff(name, r, g, atol, rtol))
        passed = all(d.passed for d in diffs)
        records.append(
            ParityRecord(
                format=fmt,
                precision=precision,  # type: ignore[arg-type]
                batch_size=case.batch_size,
                case=case.case,
                max_abs_err=max(d.max_abs for d in diffs),
                max_rel_err=max(d.max_rel for d in diffs),
                atol=atol,
                rtol=rtol,
                passed=passed,
            )
        )
        failures.extend((case, d) for d in diffs if not d.passed)
    worst = max((r.max_abs_err for r in records), default=0.0)
    logger.info(
        "model %s: %s parity over %d cases, worst max_abs_err %.3g (%d failed)",
        model_name,
        fmt,
        len(records),
        worst,
        len({id(c) for c, _ in failures}),
    )
    if failures and raise_on_failure:
        case, d = max(failures, key=lambda f: f[1].max_abs)
        err = ParityError(
            f"model {model_name!r}: {fmt}{'' if precision == 'fp32' else ' ' + precision} "
            f"output {d.name!r} differs from PyTorch at batch "
            f"{case.batch_size}, case {case.case!r}: max_abs_err {d.max_abs:.3g} > "
            f"atol {atol:g} + rtol {rtol:g} * |reference| (atol times max(1, max|output|); "
            f"reference {d.worst_ref:.3g}); "
            f"{len(failures)} output/case pair(s) failed; loosen "
            f"{'--atol/--rtol' if precision == 'fp32' else '--fp16-atol/--fp16-rtol/--bf16-rtol'} "
            "only if this error is acceptable"
        )
        err.records = records  # type: ignore[attr-defined]
        raise err
    return records


def flatten_outputs(value: Any, *, model_name: str = "") -> list[Any]:
    """A model's return value as a flat list of tensors, in the order exporters use.

    Tensors, tuples/lists and dicts (insertion order; ``None`` entries skipped, as HF
    ``ModelOutput`` does) nest freely; anything else cannot be an output.
    """
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, list | tuple):
        return [t for v in value for t in flatten_outputs(v, model_name=model_name)]
    if isinstance(value, dict):
        return [
            t
            for v in value.values()
            if v is not None
            for t in flatten_outputs(v, model_name=model_name)
        ]
    raise ParityError(
        f"model {model_name!r} returned a {type(value).__name__}; outputs must be tensors, "
        "or tuples, lists or dicts of tensors"
    )


def torch_runner(
    module: Any, input_names: Sequence[str], output_names: Sequence[str], *, model_name: str = ""
) -> Runner:
    """A runner calling ``module(*inputs)`` on CPU and naming its flattened outputs."""
    import torch

    def run(feeds: Mapping[str, np.ndarray]) -> TensorDict:
        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in input_names]
        with torch.no_grad():
            flat = flatten_outputs(module(*args), model_name=model_name)
        if len(flat) != len(output_names):
            raise ParityError(
                f"model {model_name!r} returned {len(flat)} outputs, expected "
                f"{len(output_names)} ({', '.join(output_names)})"
            )
        return {n: t.detach().cpu().numpy() for n, t in zip(output_names, flat, strict=True)}

    return run


def onnxruntime_runner(path: str, output_names: Sequence[str]) -> Runner:
    """A runner over an ONNX Runtime CPU session of ``path``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initializers are noise here
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    names = list(output_names)

    def run(feeds: Mapping[str, np.ndarray]) -> TensorDict:
        return dict(zip(names, session.run(names, dict(feeds)), strict=True))

    return run
