"""Live monitoring of served versions: the sampled payload log and drift against export.

The data plane hands every successful request to :meth:`LiveMonitor.observe`. A sampled
request (``payload_log.sample_ratio``) is queued for the payload log
(:mod:`rayfront.payload_log`); on its writer thread the inputs and outputs are counted into the version's
:class:`~rayfront.drift.DriftMonitor`, built on first use from the reference profile that
``rayfront export`` wrote into the version's sidecar. A version without a reference is
logged but has no drift gauges (the log says so once).

Gauges, read at scrape time (merged across ingress processes by the telemetry board,
each labelled with its ``rayfront_process``)::

    rayfront_input_drift{model, version, input, stat="psi"|"ks"}
    rayfront_output_drift{model, version, output, stat="psi"|"ks"}
    rayfront_payload_log_records_total{outcome="logged"|"dropped"|"failed"}
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from rayfront.drift import DriftMonitor, ReferenceProfile
from rayfront.payload_log import Payload, PayloadLog, PayloadLogSettings

logger = logging.getLogger(__name__)

#: Reads a version's reference profile (None when it has none); (model, version) -> profile.
ReferenceReader = Callable[[str, str], ReferenceProfile | None]


def sidecar_reference(repository: Path) -> ReferenceReader:
    """Reference profiles from ``<repository>/<model>/<version>/rayfront.json``."""
    from rayfront.repository.sidecar import read_sidecar

    def read(model: str, version: str) -> ReferenceProfile | None:
        prov = read_sidecar(Path(repository) / model / version)
        return prov.reference if prov is not None else None

    return read


class LiveMonitor(Collector):
    """Payload log + per-version drift monitors of one ingress process."""

    def __init__(
        self, settings: PayloadLogSettings, reference: ReferenceReader, *, process: str = ""
    ) -> None:
        self.settings = settings
        self.log = PayloadLog(settings, process=process, on_record=self._count)
        self._reference = reference
        self._monitors: dict[tuple[str, str], DriftMonitor | None] = {}
        self._lock = threading.Lock()

    def monitor(self, model: str, version: str) -> DriftMonitor | None:
        key = (model, version)
        if key not in self._monitors:
            try:
                ref = self._reference(model, version)
            except Exception as exc:  # an unreadable sidecar must not fail requests
                logger.warning("model %r version %s: no drift reference: %s", model, version, exc)
                ref = None
            if ref is None:
                logger.info(
                    "model %r version %s has no reference profile (export with --reference); "
                    "its requests are logged without drift statistics",
                    model,
                    version,
                )
            with self._lock:
                self._monitors[key] = (
                    DriftMonitor(ref, window_s=self.settings.drift_window_s, bucket_s=10.0)
                    if ref is not None
                    else None
                )
        return self._monitors[key]

    def observe(self, payload: Payload) -> None:
        """Log and count a sampled share of requests; never raises into the request.

        Only queues the arrays: the drift counting and the encoding run on the log's writer
        thread (:meth:`_count`), off the serving event loop.
        """
        if not self.log.sampled():
            return
        # Shared-memory inputs arrive as file references, read only by the replica: the
        # monitor sees (and logs) the tensors it has in hand.
        inputs = {n: a for n, a in payload.inputs.items() if isinstance(a, np.ndarray)}
        self.log.record(replace(payload, inputs=inputs))

    def _count(self, payload: Payload) -> None:
        try:
            drift = self.monitor(payload.model, payload.version)
            if drift is not None:
                drift.observe(payload.inputs, payload.outputs)
        except Exception as exc:
            logger.warning(
                "drift monitor of %r version %s failed: %s", payload.model, payload.version, exc
            )

    def collect(self) -> Iterator[Metric]:
        inputs = Metric(
            "rayfront_input_drift",
            "Live input drift against the export reference (psi, ks) over the window",
            "gauge",
        )
        outputs = Metric(
            "rayfront_output_drift",
            "Live output drift against the export reference (psi, ks) over the window",
            "gauge",
        )
        with self._lock:
            monitors = list(self._monitors.items())
        for (model, version), mon in monitors:
            if mon is None:
                continue
            for role, tensor, stat, value in mon.snapshot():
                target = inputs if role == "input" else outputs
                target.add_sample(
                    target.name,
                    {"model": model, "version": version, role: tensor, "stat": stat},
                    value,
                )
        yield inputs
        yield outputs
        records = Metric(
            "rayfront_payload_log_records", "Sampled requests by what became of them", "counter"
        )
        for outcome, value in (
            ("logged", self.log.logged),
            ("dropped", self.log.dropped),
            ("failed", self.log.failed),
        ):
            records.add_sample(
                "rayfront_payload_log_records_total", {"outcome": outcome}, float(value)
            )
        yield records

    def close(self) -> None:
        self.log.close()
