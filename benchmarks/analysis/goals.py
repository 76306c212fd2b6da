"""The performance targets of the benchmark issue, evaluated on one run's results.

Every goal is a ratio measured inside one run on one machine, at concurrency 64 (or the
highest level swept, said so in the detail). A goal whose inputs were not measured is
reported as "not measured" with the reason, never silently dropped, so the summary makes
every ratio visible whether it is met or not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rayfront.benchmarks.analysis.results import ModelResult, Point, SweepResult, TargetResult

GOAL_CONCURRENCY = 64
GoalStatus = Literal["met", "not met", "not measured"]


class GoalCheck(BaseModel):
    """One target ratio and whether this run met it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Short id.")
    statement: str = Field(description="The goal as the issue states it.")
    threshold: float = Field(description="Bound the value is compared with.")
    op: Literal[">=", "<="] = Field(description="Comparison.")
    value: float | None = Field(default=None, description="Measured ratio; None if not measured.")
    status: GoalStatus = Field(description="met, not met, or not measured.")
    detail: str = Field(default="", description="What was compared, or why it is missing.")


class _Missing(Exception):
    """A goal's inputs are not in the results (the message says which)."""


def _level(model: ModelResult) -> tuple[int, str]:
    levels = sorted({p.concurrency for t in model.targets for p in t.points})
    if not levels:
        raise _Missing(f"no served points for model {model.model!r}")
    if GOAL_CONCURRENCY in levels:
        return GOAL_CONCURRENCY, ""
    return levels[-1], f" (concurrency {GOAL_CONCURRENCY} not swept; at {levels[-1]})"


def _point(model: ModelResult, target: str, batching: str, c: int) -> Point:
    t = model.target(target, batching)
    if t is None:
        raise _Missing(f"{target} [{batching or '-'}] not in the {model.model} results")
    if t.status != "ok":
        raise _Missing(
            f"{t.label} on {model.model} {t.status}: {t.reason.splitlines()[0] if t.reason else ''}"
        )
    p = t.at(c)
    if p is None or p.requests == 0:
        raise _Missing(f"{t.label} on {model.model} has no successful requests at concurrency {c}")
    return p


def _best(
    model: ModelResult, targets: tuple[str, ...], c: int, batching_on: bool | None = None
) -> tuple[TargetResult, Point]:
    """The best (most rows/s) point of ``targets`` at concurrency ``c``, with its target."""
    best: tuple[TargetResult, Point] | None = None
    for t in model.targets:
        if t.target not in targets or t.status != "ok":
            continue
        if batching_on is not None and (t.batching != "off") != batching_on:
            continue
        p = t.at(c)
        if p is None or p.requests == 0:
            continue
        if best is None or p.rows_per_s > best[1].rows_per_s:
            best = (t, p)
    if best is None:
        on = (
            ""
            if batching_on is None
            else (" with batching on" if batching_on else " with batching off")
        )
        raise _Missing(f"no {'/'.join(targets)} point{on} at concurrency {c} on {model.model}")
    return best


def _model(result: SweepResult, name: str) -> ModelResult:
    m = result.model(name)
    if m is None:
        raise _Missing(f"model {name!r} was not in this run")
    return m


RAYFRONT = ("rayfront-http", "rayfront-grpc")


def _batching_speedup(result: SweepResult) -> tuple[float, str]:
    m = _model(result, "mlp")
    c, note = _level(m)
    t_on, on = _best(m, ("rayfront-http",), c, batching_on=True)
    off = _point(m, "rayfront-http", "off", c)
    return on.rows_per_s / off.rows_per_s, (
        f"mlp c={c}{note}: {t_on.label} {on.rows_per_s:,.0f} rows/s vs rayfront-http [off] "
        f"{off.rows_per_s:,.0f}"
    )


def _cnn_vs_raw(result: SweepResult) -> tuple[float, str]:
    m = _model(result, "cnn")
    c, note = _level(m)
    t, p = _best(m, RAYFRONT, c)
    raw = m.raw_limit
    if raw is None:
        raise _Missing("no raw limit for cnn")
    return p.rows_per_s / raw.rows_per_s, (
        f"cnn c={c}{note}: {t.label} {p.rows_per_s:,.1f} rows/s vs raw {raw.rows_per_s:,.1f} "
        f"(batch {raw.batch_size})"
    )


def _vs_baseline(baseline: str) -> Callable[[SweepResult], tuple[float, str]]:
    def ratio(result: SweepResult) -> tuple[float, str]:
        m = _model(result, "mlp")
        c, note = _level(m)
        t, p = _best(m, RAYFRONT, c)
        base = _point(m, baseline, "", c)
        return p.req_per_s / base.req_per_s, (
            f"mlp batch-{p.request_batch} c={c}{note}: {t.label} {p.req_per_s:,.0f} req/s vs "
            f"{baseline} {base.req_per_s:,.0f}"
        )

    return ratio


def _grpc_vs_http(result: SweepResult) -> tuple[float, str]:
    m = _model(result, "mlp")
    c, note = _level(m)
    t_http, http = _best(m, ("rayfront-http",), c)
    grpc = _point(m, "rayfront-grpc", t_http.batching, c)
    return grpc.rows_per_s / http.rows_per_s, (
        f"mlp c={c}{note} batching [{t_http.batching}]: gRPC {grpc.rows_per_s:,.0f} rows/s vs HTTP "
        f"{http.rows_per_s:,.0f}"
    )


def _cnn_tail(result: SweepResult) -> tuple[float, str]:
    m = _model(result, "cnn")
    c, note = _level(m)
    t, p = _best(m, RAYFRONT, c)
    return (
        p.p99_ms / p.p50_ms,
        f"cnn c={c}{note}: {t.label} p99 {p.p99_ms:.1f} ms / p50 {p.p50_ms:.1f} ms",
    )


_GOALS: tuple[tuple[str, str, str, float, Callable[[SweepResult], tuple[float, str]]], ...] = (
    ("batching-speedup", "batching on vs off at concurrency 64, tiny MLP (throughput)", ">=", 3.0, _batching_speedup),
    ("cnn-vs-raw", "ResNet-18-size CNN at concurrency 64 vs raw ORT limit (rows/s)", ">=", 0.95, _cnn_vs_raw),
    ("mlp-vs-bare", "tiny MLP batch-1 at concurrency 64 vs bare ASGI (req/s)", ">=", 1.0, _vs_baseline("bare")),
    ("mlp-vs-serve", "tiny MLP batch-1 at concurrency 64 vs Ray Serve default proxy (req/s)", ">=", 10.0, _vs_baseline("serve")),
    ("grpc-vs-http", "rayfront gRPC vs HTTP throughput, tiny MLP at concurrency 64", ">=", 1.0, _grpc_vs_http),
    ("cnn-p99-over-p50", "CNN p99/p50 latency at concurrency 64", "<=", 1.2, _cnn_tail),
)  # fmt: skip


def evaluate(result: SweepResult) -> list[GoalCheck]:
    """Every goal, measured or with the reason it could not be."""
    checks: list[GoalCheck] = []
    for name, statement, op, threshold, fn in _GOALS:
        try:
            value, detail = fn(result)
        except _Missing as missing:
            checks.append(
                GoalCheck(
                    name=name, statement=statement, threshold=threshold, op=op,  # type: ignore[arg-type]
                    status="not measured", detail=str(missing),
                )
            )  # fmt: skip
            continue
        met = value >= threshold if op == ">=" else value <= threshold
        checks.append(
            GoalCheck(
                name=name, statement=statement, threshold=threshold, op=op,  # type: ignore[arg-type]
                value=value, status="met" if met else "not met", detail=detail,
            )
        )  # fmt: skip
    return checks
