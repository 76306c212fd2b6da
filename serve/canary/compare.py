"""Compare a stable version's outputs with a candidate's on mirrored (shadow) traffic.

Agreement is measured per row (the batch dimension), the unit a client would notice:

* classifier outputs (``[batch, C]`` scores with ``C > 1``): the row agrees when both
  versions pick the same top-1 class;
* integer, boolean or BYTES outputs (class ids, labels): the row agrees when it is equal;
* regression and embedding outputs: the row agrees when every element is within
  ``atol + rtol * |stable|`` (``numpy.isclose`` semantics). Max-abs and max-rel
  differences and the cosine similarity per row are recorded as well.

With several outputs a row agrees only when it agrees in every output. ``kind="auto"``
guesses per output: a float ``[batch, C > 1]`` output is treated as a classifier when its
name says so (logits, probs, softmax, class) or its rows look like probabilities (in
[0, 1], summing to 1); everything else float is regression. Pass ``kind`` explicitly when
the guess would be wrong (e.g. multi-target regression named ``logits``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rayfront.canary.state import OutputKind

_CLASSIFIER_HINTS = ("logit", "prob", "softmax", "class")


@dataclass(frozen=True, slots=True)
class Comparison:
    """The comparison of one mirrored request."""

    rows: int
    agree_rows: int
    kinds: tuple[str, ...]
    max_abs: float | None = None
    max_rel: float | None = None
    min_cosine: float | None = None
    cosine_sum: float = 0.0
    cosine_rows: int = 0
    note: str = ""

    @property
    def agreement(self) -> float | None:
        return self.agree_rows / self.rows if self.rows else None


def _rows_of(a: np.ndarray) -> int:
    return int(a.shape[0]) if a.ndim >= 1 else 1


def _as_rows(a: np.ndarray) -> np.ndarray:
    """View as [rows, features] (a scalar or 1-D output is one value per row)."""
    if a.ndim == 0:
        return a.reshape(1, 1)
    return a.reshape(a.shape[0], -1)


def resolve_kind(name: str, stable: np.ndarray, kind: OutputKind = "auto") -> str:
    """The comparison used for one output: ``classifier``, ``exact`` or ``regression``."""
    if stable.dtype.kind in "OSUbiu":
        return "exact"
    scores = stable.ndim == 2 and stable.shape[1] > 1
    if kind == "regression" or (kind == "classifier" and not scores):
        # Top-1 needs a class axis; a single score per row can only be compared by value.
        return "regression"
    if kind == "classifier":
        return "classifier"
    if scores:
        lowered = name.lower()
        if any(h in lowered for h in _CLASSIFIER_HINTS):
            return "classifier"
        if stable.size and np.all(np.isfinite(stable)):
            in_unit = float(stable.min()) >= 0.0 and float(stable.max()) <= 1.0
            if in_unit and np.allclose(stable.sum(axis=1), 1.0, atol=1e-3):
                return "classifier"
    return "regression"


@dataclass(slots=True)
class _OutputResult:
    agree: np.ndarray  # bool per row
    kind: str
    max_abs: float | None = None
    max_rel: float | None = None
    cosines: np.ndarray | None = None


def _compare_one(
    name: str, a: np.ndarray, b: np.ndarray, kind: OutputKind, atol: float, rtol: float
) -> _OutputResult:
    rows = _rows_of(a)
    if a.shape != b.shape:
        return _OutputResult(np.zeros(rows, dtype=bool), "shape_mismatch")
    resolved = resolve_kind(name, a, kind)
    if resolved == "exact":
        if a.dtype.kind == "O" or b.dtype.kind == "O":
            eq = np.array(
                [
                    all(x == y for x, y in zip(ra, rb, strict=True))
                    for ra, rb in zip(_as_rows(a), _as_rows(b), strict=True)
                ],
                dtype=bool,
            )
        else:
            eq = np.all(_as_rows(a) == _as_rows(b), axis=1)
        return _OutputResult(eq, resolved)

    fa = _as_rows(a).astype(np.float64, copy=False)
    fb = _as_rows(b).astype(np.float64, copy=False)
    # inf/NaN outputs are data here, not bugs: let them propagate without warnings.
    with np.errstate(all="ignore"):
        diff = np.abs(fa - fb)
        # NaN in the same place is agreement, not an infinite difference.
        diff = np.where(np.isnan(fa) & np.isnan(fb), 0.0, diff)
        max_abs = float(np.nanmax(diff)) if diff.size and not np.all(np.isnan(diff)) else 0.0
        # Relative difference only where the stable value is non-zero: against 0 it is
        # undefined, and max_abs already covers those elements.
        nonzero = np.abs(fa) > 0
        rel = diff[nonzero] / np.abs(fa[nonzero])
        max_rel = float(np.nanmax(rel)) if rel.size and not np.all(np.isnan(rel)) else 0.0
        norms = np.linalg.norm(fa, axis=1) * np.linalg.norm(fb, axis=1)
        dots = np.einsum("ij,ij->i", fa, fb)
        cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)
        cos = np.where(norms > 0, cos, np.where(np.all(fa == fb, axis=1), 1.0, 0.0))
    if resolved == "classifier":
        agree = np.argmax(fa, axis=1) == np.argmax(fb, axis=1)
    else:
        agree = np.all(np.isclose(fb, fa, rtol=rtol, atol=atol, equal_nan=True), axis=1)
    return _OutputResult(agree, resolved, max_abs, max_rel, cos)


def compare_outputs(
    stable: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    *,
    kind: OutputKind = "auto",
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> Comparison:
    """Compare every output the stable version returned with the candidate's."""
    if not stable:
        return Comparison(rows=0, agree_rows=0, kinds=(), note="stable returned no outputs")
    results: list[_OutputResult] = []
    notes: list[str] = []
    for name, a in stable.items():
        a = np.asarray(a)
        b = candidate.get(name)
        if b is None:
            results.append(_OutputResult(np.zeros(_rows_of(a), dtype=bool), "missing"))
            notes.append(f"output {name!r} missing from candidate")
            continue
        b = np.asarray(b)
        res = _compare_one(name, a, b, kind, atol, rtol)
        if res.kind == "shape_mismatch":
            notes.append(
                f"output {name!r}: stable shape {list(a.shape)}, candidate {list(b.shape)}"
            )
        results.append(res)

    lengths = {len(r.agree) for r in results}
    if len(lengths) == 1:
        agree = np.logical_and.reduce([r.agree for r in results])
    else:
        # Outputs disagree on the row count (a non-batching model): judge the request whole.
        agree = np.array([all(bool(r.agree.all()) for r in results)])
    floats = [r for r in results if r.max_abs is not None]
    cosines = [r.cosines for r in results if r.cosines is not None and r.cosines.size]
    all_cos = np.concatenate(cosines) if cosines else np.empty(0)
    return Comparison(
        rows=int(agree.size),
        agree_rows=int(np.count_nonzero(agree)),
        kinds=tuple(sorted({r.kind for r in results})),
        max_abs=max((r.max_abs for r in floats), default=None),  # type: ignore[type-var]
        max_rel=max((r.max_rel for r in floats), default=None),  # type: ignore[type-var]
        min_cosine=float(all_cos.min()) if all_cos.size else None,
        cosine_sum=float(all_cos.sum()) if all_cos.size else 0.0,
        cosine_rows=int(all_cos.size),
        note="; ".join(notes),
    )


def _finite(x: float | None) -> float | None:
    """JSON cannot carry inf/NaN; report them as None (the note/counts say what happened)."""
    return x if x is not None and math.isfinite(x) else None


class ShadowStats:
    """Running aggregate of comparisons for one (model, candidate version)."""

    __slots__ = (
        "agree_rows",
        "comparisons",
        "cosine_rows",
        "cosine_sum",
        "errors",
        "kinds",
        "last_note",
        "max_abs",
        "max_rel",
        "min_cosine",
        "rows",
    )

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start a new window (the controller does this at each step)."""
        self.comparisons = 0
        self.rows = 0
        self.agree_rows = 0
        self.errors = 0
        self.max_abs: float | None = None
        self.max_rel: float | None = None
        self.min_cosine: float | None = None
        self.cosine_sum = 0.0
        self.cosine_rows = 0
        self.kinds: set[str] = set()
        self.last_note = ""

    def add(self, cmp: Comparison) -> None:
        self.comparisons += 1
        self.rows += cmp.rows
        self.agree_rows += cmp.agree_rows
        self.kinds.update(cmp.kinds)
        if cmp.max_abs is not None:
            self.max_abs = cmp.max_abs if self.max_abs is None else max(self.max_abs, cmp.max_abs)
        if cmp.max_rel is not None:
            self.max_rel = cmp.max_rel if self.max_rel is None else max(self.max_rel, cmp.max_rel)
        if cmp.min_cosine is not None:
            self.min_cosine = (
                cmp.min_cosine if self.min_cosine is None else min(self.min_cosine, cmp.min_cosine)
            )
        self.cosine_sum += cmp.cosine_sum
        self.cosine_rows += cmp.cosine_rows
        if cmp.note:
            self.last_note = cmp.note

    def copy(self) -> ShadowStats:
        """An independent snapshot (analysis reads it while requests keep adding)."""
        dup = ShadowStats()
        for slot in self.__slots__:
            value = getattr(self, slot)
            setattr(dup, slot, set(value) if isinstance(value, set) else value)
        return dup

    def export(self) -> dict[str, Any]:
        """The raw tallies as JSON (merged across ingress processes by :meth:`merge`)."""
        return {
            slot: sorted(getattr(self, slot)) if slot == "kinds" else getattr(self, slot)
            for slot in self.__slots__
        }

    def merge(self, other: dict[str, Any]) -> None:
        """Add another process's :meth:`export` of the same window."""
        for slot in ("comparisons", "rows", "agree_rows", "errors", "cosine_rows"):
            setattr(self, slot, getattr(self, slot) + int(other.get(slot, 0)))
        self.cosine_sum += float(other.get("cosine_sum", 0.0))
        for slot, pick in (("max_abs", max), ("max_rel", max), ("min_cosine", min)):
            theirs = other.get(slot)
            if theirs is not None:
                mine = getattr(self, slot)
                setattr(self, slot, float(theirs) if mine is None else pick(mine, float(theirs)))
        self.kinds.update(other.get("kinds", ()))
        if other.get("last_note"):
            self.last_note = str(other["last_note"])

    def add_error(self) -> None:
        """The candidate failed a mirrored request (its error also counts in its error rate)."""
        self.errors += 1

    @property
    def agreement(self) -> float | None:
        return self.agree_rows / self.rows if self.rows else None

    @property
    def mean_cosine(self) -> float | None:
        return self.cosine_sum / self.cosine_rows if self.cosine_rows else None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary."""
        return {
            "comparisons": self.comparisons,
            "rows": self.rows,
            "agree_rows": self.agree_rows,
            "agreement": self.agreement,
            "errors": self.errors,
            "max_abs": _finite(self.max_abs),
            "max_rel": _finite(self.max_rel),
            "min_cosine": _finite(self.min_cosine),
            "mean_cosine": _finite(self.mean_cosine),
            "kinds": sorted(self.kinds),
            "note": self.last_note,
        }
