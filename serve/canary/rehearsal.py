"""Rehearsal: replay recorded real requests against a pinned candidate before it goes live.

The payload log (:mod:`rayfront.payload_log`) holds real requests and the answers the
stable version gave them. A rehearsal sends each recorded request to the candidate *and*
to the stable, both pinned by URL (so the split, and live clients, never see the
candidate), at the recorded pace times ``speed``, and scores the candidate:

* **agreement** of its answers with the recorded ones (the shadow comparison:
  :func:`rayfront.canary.compare.compare_outputs`);
* **errors**: requests the candidate failed that the stable answered;
* **latency** against the stable's on the same requests at the same moments: slower only
  when a one-sided Mann-Whitney U test says so at ``alpha`` and the median is more than
  ``latency_floor_ms`` above the stable's (the rollout gates' rule).

The result is persisted with the model's canary document (``rehearsals``) and shown by
``rayfront canary status``; ``rayfront canary start --rehearse`` refuses to start a
rollout whose rehearsal fails.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from rayfront.canary.compare import compare_outputs
from rayfront.canary.significance import mann_whitney
from rayfront.canary.state import RehearsalResult
from rayfront.errors import NotFoundError
from rayfront.payload_log import decode_tensor, read_records
from rayfront.tensors import TensorDict


@dataclass(frozen=True)
class Recorded:
    """One logged request and the answer it got."""

    ts: float
    inputs: TensorDict
    outputs: TensorDict


@dataclass(frozen=True)
class Outcome:
    """One replayed request on one version."""

    ok: bool
    latency_s: float
    outputs: TensorDict | None = None


def load_recorded(
    log_dir: Path, model: str, stable_version: str, max_requests: int
) -> list[Recorded]:
    """The newest ``max_requests`` complete records the stable answered, oldest first."""

    def complete(rec: dict[str, Any]) -> bool:
        # A tensor logged without its bytes (too big) cannot be replayed.
        return all("b64" in e for part in ("inputs", "outputs") for e in rec[part].values())

    def decoded(part: dict[str, Any]) -> TensorDict:
        return {n: decode_tensor(e, name=n, model=model) for n, e in part.items()}  # type: ignore[misc]

    raw = sorted(
        (r for r in read_records(log_dir, model, stable_version) if complete(r)),
        key=lambda r: float(r["ts"]),
    )[-max_requests:]
    # Only the records kept are decoded.
    picked = [Recorded(float(r["ts"]), decoded(r["inputs"]), decoded(r["outputs"])) for r in raw]
    if not picked:
        raise NotFoundError(
            f"no replayable payload log records of model {model!r} version {stable_version} "
            f"in {log_dir}; serve with --payload-log and let traffic reach the stable first"
        )
    return picked


Send = Callable[[str, TensorDict], Outcome]


def replay(
    recorded: Sequence[Recorded],
    send: Send,
    *,
    canary: str,
    stable: str,
    speed: float = 1.0,
    concurrency: int = 8,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[Outcome], list[Outcome]]:
    """Send every record to both versions at the recorded pace times ``speed``."""
    if speed <= 0:
        raise ValueError(f"speed must be > 0, got {speed}")
    t0 = recorded[0].ts
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures: list[tuple[concurrent.futures.Future[Outcome], concurrent.futures.Future[Outcome]]]
        futures = []
        for i, rec in enumerate(recorded):
            due = start + (rec.ts - t0) / speed
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(min(delay, 5.0))  # a long gap in the log is not worth waiting out
            futures.append(
                (pool.submit(send, canary, rec.inputs), pool.submit(send, stable, rec.inputs))
            )
            if progress is not None:
                progress(i + 1)
        pairs = [(c.result(), s.result()) for c, s in futures]
    return [c for c, _ in pairs], [s for _, s in pairs]


def score(
    recorded: Sequence[Recorded],
    canary_out: Sequence[Outcome],
    stable_out: Sequence[Outcome],
    *,
    canary_version: str,
    stable_version: str,
    speed: float,
    min_agreement: float = 0.98,
    max_error_rate: float = 0.0,
    alpha: float = 0.05,
    latency_floor_ms: float = 5.0,
    kind: Any = "auto",
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> RehearsalResult:
    """The verdict on a replay (pure)."""
    rows = agree = 0
    for rec, out in zip(recorded, canary_out, strict=True):
        if out.ok and out.outputs is not None:
            cmp = compare_outputs(rec.outputs, out.outputs, kind=kind, atol=atol, rtol=rtol)
            rows += cmp.rows
            agree += cmp.agree_rows
    errors = sum(not o.ok for o in canary_out)
    agreement = agree / rows if rows else None
    c_lat = [o.latency_s for o in canary_out if o.ok]
    s_lat = [o.latency_s for o in stable_out if o.ok]
    reasons: list[str] = []
    n = len(recorded)
    if errors > max_error_rate * n:
        reasons.append(f"{errors} of {n} replayed requests failed on the candidate")
    if agreement is None or agreement < min_agreement:
        shown = "none" if agreement is None else f"{agreement:.2%}"
        reasons.append(
            f"agreement with the recorded answers {shown} < min_agreement {min_agreement:.2%}"
        )
    p_value = None
    if c_lat and s_lat:
        rank = mann_whitney(c_lat, s_lat)
        p_value = rank.p_value
        if rank.slower(alpha, latency_floor_ms):
            reasons.append(
                f"candidate median {rank.canary_median_s * 1000:.2f} ms is {rank.slower_ms:.2f} ms "
                f"above the stable's on the same requests (Mann-Whitney p={rank.p_value:.3g})"
            )

    def pct(values: list[float], q: float) -> float | None:
        return float(np.quantile(values, q)) if values else None

    return RehearsalResult(
        at=datetime.now(UTC),
        canary_version=canary_version,
        stable_version=stable_version,
        requests=n,
        speed=speed,
        errors=errors,
        agreement=agreement,
        canary_p50_s=pct(c_lat, 0.5),
        canary_p99_s=pct(c_lat, 0.99),
        stable_p50_s=pct(s_lat, 0.5),
        stable_p99_s=pct(s_lat, 0.99),
        latency_p_value=p_value,
        verdict="fail" if reasons else "pass",
        reasons=reasons,
    )


def http_sender(url: str, model: str, timeout_s: float = 60.0) -> Send:
    """Pinned KServe v2 binary HTTP requests through tritonclient, one client per thread."""
    import threading

    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException, np_to_triton_dtype

    local = threading.local()

    def send(version: str, inputs: TensorDict) -> Outcome:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpclient.InferenceServerClient(
                url, network_timeout=timeout_s, connection_timeout=timeout_s
            )
        wire = []
        for name, arr in inputs.items():
            inp = httpclient.InferInput(name, list(arr.shape), np_to_triton_dtype(arr.dtype))
            inp.set_data_from_numpy(arr, binary_data=True)
            wire.append(inp)
        start = time.perf_counter()
        try:
            result = client.infer(model, wire, model_version=version)
        except InferenceServerException:
            return Outcome(False, time.perf_counter() - start)
        latency = time.perf_counter() - start
        names = [o["name"] for o in result.get_response()["outputs"]]
        return Outcome(True, latency, {n: result.as_numpy(n) for n in names})

    return send
