"""The raw limit: ONNX Runtime ``session.run`` in-process at each batch size, no server.

The best rows/s over the batch sizes is the ceiling every served target is compared
with: no transport, no queue, no copies beyond ORT's own. The session is opened exactly
like the baselines' (spinning off, see :mod:`.session`). Never imports Ray.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rayfront.benchmarks.analysis.results import LatencySummary, RawPoint
from rayfront.benchmarks.targets.session import Device, make_session, random_inputs, session_io

logger = logging.getLogger(__name__)

MIN_CALLS = 3


def raw_sweep(
    model_path: Path,
    batches: Sequence[int],
    seconds_per_batch: float,
    device: Device = "cpu",
    tensorrt: bool = False,
    on_batch_done: Callable[[int], None] | None = None,
) -> list[RawPoint]:
    """Time ``session.run`` for ``seconds_per_batch`` (and at least 3 calls) per batch size."""
    session = make_session(model_path, device=device, tensorrt=tensorrt)
    _, outputs = session_io(session)
    points: list[RawPoint] = []
    perf = time.perf_counter
    for batch in batches:
        feeds = random_inputs(session, batch, seed=batch)
        session.run(outputs, feeds)  # first call allocates; not timed
        latencies: list[float] = []
        t_start = perf()
        t_end = t_start + seconds_per_batch
        while True:
            t0 = perf()
            session.run(outputs, feeds)
            t1 = perf()
            latencies.append(t1 - t0)
            if t1 >= t_end and len(latencies) >= MIN_CALLS:
                break
        elapsed = perf() - t_start
        point = RawPoint(
            batch_size=batch,
            calls=len(latencies),
            duration_s=elapsed,
            rows_per_s=batch * len(latencies) / elapsed,
            latency=LatencySummary.of(latencies),
        )
        logger.info(
            "raw %s batch %d: %.1f rows/s", model_path.parent.parent.name, batch, point.rows_per_s
        )
        points.append(point)
        if on_batch_done is not None:
            on_batch_done(batch)
    return points
