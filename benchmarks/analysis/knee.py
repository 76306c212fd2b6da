"""Knee finder and serving recommendation.

The *knee* of a target is its highest-throughput point whose p99 stays under a bound (and
that had no errors): past it, more concurrency only buys queueing. From the knees of the
rayfront targets at each swept batching setting, :func:`recommend` picks the
``max_batch_size``, ``max_queue_delay_microseconds`` and replica count that serve the most
rows/s inside a p99 target, and says how to apply them (config.pbtxt, Serve config YAML).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from rayfront.benchmarks.analysis.results import ModelResult, Point, RawPoint, TargetResult
from rayfront.benchmarks.run.sweep_config import BatchingSetting

#: A knee point may lose at most this share of requests (0: none).
MAX_KNEE_ERROR_RATE = 0.0
#: A raw batch is "efficient" once it reaches this share of the best raw rows/s.
EFFICIENT_SHARE = 0.9


def knee(points: Sequence[Point], p99_bound_ms: float) -> Point | None:
    """Highest rows/s point with p99 <= bound and no errors; ties go to lower concurrency."""
    eligible = [
        p
        for p in points
        if p.requests > 0
        and p.error_rate <= MAX_KNEE_ERROR_RATE
        and p.latency is not None
        and p.latency.p99_ms <= p99_bound_ms
    ]
    return max(eligible, key=lambda p: (p.rows_per_s, -p.concurrency), default=None)


def target_knee(target: TargetResult, p99_bound_ms: float) -> Point | None:
    """Knee of a target, None if it failed or no point meets the bound."""
    if target.status != "ok":
        return None
    return knee(target.points, p99_bound_ms)


def efficient_raw_batch(raw: Sequence[RawPoint], share: float = EFFICIENT_SHARE) -> RawPoint | None:
    """Smallest raw batch size reaching ``share`` of the best raw rows/s."""
    if not raw:
        return None
    best = max(r.rows_per_s for r in raw)
    return min((r for r in raw if r.rows_per_s >= share * best), key=lambda r: r.batch_size)


class Candidate(BaseModel):
    """One batching setting's best knee over the rayfront protocols."""

    model_config = ConfigDict(extra="forbid")

    target: str = Field(description="Target whose knee this is.")
    batching: str = Field(description="Batching setting label.")
    knee: Point | None = Field(description="Knee under the p99 target, if any.")


class Recommendation(BaseModel):
    """What to configure for one model, with the evidence and how to apply it."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="Model name.")
    p99_target_ms: float = Field(description="The p99 target recommended for.")
    feasible: bool = Field(description="Some measured setting met the p99 target.")
    source: str = Field(description="Targets the recommendation is based on.")
    batching: str = Field(default="", description="Chosen batching setting label.")
    max_batch_size: int | None = Field(default=None, description="None = leave batching off.")
    max_queue_delay_us: int = Field(default=0, description="max_queue_delay_microseconds.")
    replicas: int = Field(default=1, description="Model replicas.")
    knee: Point | None = Field(default=None, description="The chosen knee point.")
    knee_target: str = Field(default="", description="Target (protocol) of the chosen knee.")
    candidates: list[Candidate] = Field(default_factory=list, description="Every setting's knee.")
    notes: list[str] = Field(default_factory=list, description="Reasoning, in order.")
    config_pbtxt: str = Field(default="", description="config.pbtxt fields to set.")
    serve_yaml: str = Field(default="", description="Serve config YAML override to apply.")


def _candidates(result: ModelResult, p99_ms: float) -> tuple[list[Candidate], str]:
    for prefix, source in (
        ("rayfront-", "rayfront-http/rayfront-grpc"),
        ("batcher", "batcher (in-process, no transport)"),
    ):
        targets = [t for t in result.targets if t.target.startswith(prefix) and t.status == "ok"]
        if not targets:
            continue
        best: dict[str, Candidate] = {}
        for t in targets:
            k = target_knee(t, p99_ms)
            current = best.get(t.batching)
            if current is None or (
                k is not None and (current.knee is None or k.rows_per_s > current.knee.rows_per_s)
            ):
                best[t.batching] = Candidate(target=t.target, batching=t.batching, knee=k)
        return list(best.values()), source
    return [], ""


def config_snippet(model: str, setting: BatchingSetting, kind: str = "KIND_CPU") -> str:
    """The config.pbtxt fields for ``setting``, rendered through Triton's ModelConfig proto."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    cfg = model_config_pb2.ModelConfig(name=model)
    if setting.max_batch_size is not None:
        cfg.max_batch_size = setting.max_batch_size
        cfg.dynamic_batching.max_queue_delay_microseconds = setting.max_queue_delay_us
    cfg.instance_group.add(
        kind=model_config_pb2.ModelInstanceGroup.Kind.Value(kind), count=setting.replicas
    )
    return text_format.MessageToString(cfg, as_utf8=True, use_short_repeated_primitives=True)


def serve_yaml_snippet(model: str, replicas: int) -> str:
    """The rayfront Serve-config override pinning ``replicas`` for ``model``."""
    import yaml

    doc = {
        "applications": [
            {
                "name": "rayfront",
                "import_path": "rayfront.deploy.app:build_gateway",
                "args": {
                    "models": {
                        model: {"autoscaling": {"min_replicas": replicas, "max_replicas": replicas}}
                    }
                },
            }
        ]
    }
    return yaml.safe_dump(doc, sort_keys=False)


def recommend(
    result: ModelResult,
    p99_ms: float | None = None,
    target_rps: float | None = None,
    cpu_count: int | None = None,
    device: str = "cpu",
) -> Recommendation:
    """Pick batching and replicas for ``result.model`` under ``p99_ms`` (default: the run's bound)."""
    p99 = p99_ms if p99_ms is not None else result.p99_bound_ms
    candidates, source = _candidates(result, p99)
    rec = Recommendation(
        model=result.model, p99_target_ms=p99, feasible=False, source=source, candidates=candidates
    )
    if not candidates:
        rec.notes.append(
            "no rayfront or batcher target ran successfully; nothing to recommend from"
        )
        return rec
    met = [c for c in candidates if c.knee is not None]
    if not met:
        rec.notes.append(
            f"no measured point of any batching setting keeps p99 <= {p99:g} ms without errors; "
            "the target is below what this host reached — relax the target, use faster hardware, "
            "or add replicas on more cores"
        )
        return rec
    # Most rows/s wins; on a tie prefer the shorter queue delay (less latency at low load).
    best = max(
        met,
        key=lambda c: (
            c.knee.rows_per_s if c.knee else 0.0,
            -BatchingSetting.parse(c.batching).max_queue_delay_us,
        ),
    )
    setting = BatchingSetting.parse(best.batching)
    rec.feasible = True
    rec.batching = best.batching
    rec.max_batch_size = setting.max_batch_size
    rec.max_queue_delay_us = setting.max_queue_delay_us
    rec.replicas = setting.replicas
    rec.knee = best.knee
    rec.knee_target = best.target
    knee_point = best.knee
    if knee_point is None:  # unreachable: `met` only holds candidates with a knee
        return rec
    rec.notes.append(
        f"best knee under p99 {p99:g} ms: {best.target} with batching '{best.batching}' at "
        f"concurrency {knee_point.concurrency}: {knee_point.rows_per_s:,.0f} rows/s, "
        f"p99 {knee_point.p99_ms:.1f} ms"
    )
    others = sorted(
        (c for c in candidates if c is not best),
        key=lambda c: -(c.knee.rows_per_s if c.knee else 0.0),
    )
    for c in others:
        what = f"{c.knee.rows_per_s:,.0f} rows/s" if c.knee else "no point under the bound"
        rec.notes.append(f"batching '{c.batching}' ({c.target}): {what}")
    eff = efficient_raw_batch(result.raw)
    if eff is not None and setting.max_batch_size is not None:
        rec.notes.append(
            f"raw ONNX Runtime reaches {EFFICIENT_SHARE:.0%} of its best rows/s from batch "
            f"{eff.batch_size}; a max_batch_size below that leaves throughput unused, far above "
            "it only adds queueing"
        )
    if target_rps is not None:
        per_replica = knee_point.req_per_s / max(setting.replicas, 1)
        needed = (
            max(1, math.ceil(target_rps / per_replica)) if per_replica > 0 else setting.replicas
        )
        rec.replicas = needed
        rec.notes.append(
            f"for {target_rps:,.0f} req/s at {per_replica:,.0f} req/s per replica (measured knee): "
            f"{needed} replica(s)"
        )
        if cpu_count and device == "cpu" and needed > cpu_count:
            rec.notes.append(
                f"{needed} CPU-bound replicas exceed this host's {cpu_count} cores; they only add "
                "throughput when Ray spreads them over more nodes"
            )
    else:
        rec.notes.append(
            f"replicas: {setting.replicas} as measured; pass --target-rps to size replicas for a load"
        )
    final = setting.model_copy(update={"replicas": rec.replicas})
    rec.config_pbtxt = config_snippet(
        result.model, final, "KIND_GPU" if device == "cuda" else "KIND_CPU"
    )
    rec.serve_yaml = serve_yaml_snippet(result.model, rec.replicas)
    return rec
