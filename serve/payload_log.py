"""A bounded, sampled log of live requests: inputs, outputs, version, latency, route key.

Each ingress process appends JSON lines to ``<directory>/<model>/payloads-<process>.jsonl``
and rotates it at ``max_file_mb`` (``.1`` ... ``.<max_files - 1>``, the oldest dropped), so
the disk it can use is bounded. Requests are sampled at ``sample_ratio``; a sampled
request's arrays go to a queue bounded in records and bytes that one writer thread drains
(encoding included), so the request path never touches the disk or encodes anything, and a
full queue drops records (counted) instead of growing memory.
Writing failures are logged and counted, never raised: logging never fails a request.

A record::

    {"ts": 1733540000.12, "model": "digits", "version": "1", "id": "req-7",
     "route_key": null, "latency_s": 0.0031,
     "inputs":  {"pixels": {"datatype": "FP32", "shape": [1, 1, 8, 8], "b64": "..."}},
     "outputs": {"logits": {...}, "probabilities": {...}}}

Tensors larger than ``max_tensor_kb`` keep their datatype and shape with
``"truncated": true`` and no bytes. The same records feed ``rayfront drift report`` and
canary rehearsal (:func:`read_records`, :func:`decode_tensor`).
"""

from __future__ import annotations

import base64
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from rayfront import tensors
from rayfront.tensors import TensorDict

logger = logging.getLogger(__name__)


class PayloadLogSettings(BaseModel):
    """Where live requests are logged, how many, and how much disk they may use."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    directory: str = Field(description="Absolute directory of the logs (one folder per model).")
    sample_ratio: float = Field(
        default=0.1, ge=0.0, le=1.0, description="Share of successful requests logged."
    )
    max_file_mb: float = Field(default=64.0, gt=0, description="Rotate a file at this size.")
    max_files: int = Field(default=5, ge=1, description="Files kept per process and model.")
    max_tensor_kb: int = Field(
        default=256, ge=0, description="Larger tensors are logged as datatype and shape only."
    )
    queue_size: int = Field(
        default=1024, ge=1, description="Records waiting for the writer; beyond it, dropped."
    )
    max_queue_mb: float = Field(
        default=64.0, gt=0, description="Tensor bytes waiting for the writer; beyond it, dropped."
    )
    drift_window_s: float = Field(
        default=300.0, gt=0, description="Sliding window of the live drift statistics."
    )

    @field_validator("directory")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not Path(value).is_absolute():
            raise ValueError(
                f"payload log directory {value!r} must be absolute (replicas run elsewhere)"
            )
        return value


def encode_tensor(arr: np.ndarray, max_bytes: int) -> dict[str, Any]:
    """One tensor as a JSON-able record (exact bytes, base64) or its header if too big."""
    arr = np.asarray(arr)
    entry: dict[str, Any] = {
        "datatype": tensors.datatype_of(arr, role="tensor"),
        "shape": list(arr.shape),
    }
    raw = tensors.raw_bytes(arr)
    if len(raw) > max_bytes:
        entry["truncated"] = True
    else:
        entry["b64"] = base64.b64encode(raw).decode("ascii")
    return entry


def decode_tensor(entry: dict[str, Any], *, name: str = "", model: str = "") -> np.ndarray | None:
    """The array of a logged tensor; None when it was logged without its bytes."""
    if entry.get("truncated") or "b64" not in entry:
        return None
    return tensors.tensor_from_raw(
        entry["datatype"], entry["shape"], base64.b64decode(entry["b64"]), name=name, model=model
    )


@dataclass(frozen=True, slots=True)
class Payload:
    """One finished request, as the data plane hands it to the monitor and the log."""

    model: str
    version: str
    request_id: str
    route_key: str | None
    latency_s: float
    inputs: TensorDict
    outputs: TensorDict


class PayloadLog:
    """The sampled request log of one ingress process (all models).

    ``record`` only queues the request's arrays (references, no copy, no encoding) within
    a count and a byte budget; the writer thread runs ``on_record`` (drift counting), encodes
    and appends, so the serving event loop never pays for either.
    """

    def __init__(
        self,
        settings: PayloadLogSettings,
        *,
        process: str,
        rng: random.Random | None = None,
        on_record: Callable[[Payload], None] | None = None,
    ) -> None:
        self.settings = settings
        self.process = process or f"pid{os.getpid()}"
        self.directory = Path(settings.directory)
        self._rng = rng or random.Random()
        self._on_record = on_record
        self._queue: queue.Queue[tuple[float, int, Payload] | None] = queue.Queue(
            settings.queue_size
        )
        self._queued_bytes = 0
        self._max_queued_bytes = int(settings.max_queue_mb * 1024 * 1024)
        self._budget = threading.Lock()
        self._max_tensor = settings.max_tensor_kb * 1024
        self._max_file = int(settings.max_file_mb * 1024 * 1024)
        self.logged = 0
        self.dropped = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._write_loop, name="rf-payload-log", daemon=True)
        self._thread.start()

    def sampled(self) -> bool:
        ratio = self.settings.sample_ratio
        return ratio >= 1.0 or (ratio > 0.0 and self._rng.random() < ratio)

    def record(self, payload: Payload) -> None:
        """Queue one request (call only for sampled requests); never raises, never blocks."""
        nbytes = sum(
            getattr(a, "nbytes", 0) for a in (*payload.inputs.values(), *payload.outputs.values())
        )
        with self._budget:
            if self._queued_bytes + nbytes > self._max_queued_bytes:
                self.dropped += 1
                return
            self._queued_bytes += nbytes
        try:
            self._queue.put_nowait((time.time(), nbytes, payload))
        except queue.Full:
            with self._budget:
                self._queued_bytes -= nbytes
            self.dropped += 1

    def path_for(self, model: str) -> Path:
        return self.directory / model / f"payloads-{self.process}.jsonl"

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                ts, nbytes, payload = item
                with self._budget:
                    self._queued_bytes -= nbytes
                if self._on_record is not None:
                    self._on_record(payload)
                self._append(self._encode(ts, payload))
                self.logged += 1
            except OSError as exc:
                self.failed += 1
                logger.warning("payload log: write failed (%s); record dropped", exc)
            except Exception as exc:  # a tensor that cannot be encoded: skip the record
                self.failed += 1
                logger.warning("payload log: could not record a request: %s", exc)
            finally:
                self._queue.task_done()

    def _encode(self, ts: float, payload: Payload) -> dict[str, Any]:
        return {
            "ts": ts,
            "model": payload.model,
            "version": payload.version,
            "id": payload.request_id,
            "route_key": payload.route_key,
            "latency_s": round(payload.latency_s, 6),
            "inputs": {n: encode_tensor(a, self._max_tensor) for n, a in payload.inputs.items()},
            "outputs": {n: encode_tensor(a, self._max_tensor) for n, a in payload.outputs.items()},
        }

    def _append(self, rec: dict[str, Any]) -> None:
        path = self.path_for(rec["model"])
        path.parent.mkdir(parents=True, exist_ok=True)
        line = orjson.dumps(rec) + b"\n"
        if path.exists() and path.stat().st_size + len(line) > self._max_file:
            self._rotate(path)
        with path.open("ab") as fh:
            fh.write(line)

    def _rotate(self, path: Path) -> None:
        keep = self.settings.max_files
        oldest = path.with_name(f"{path.name}.{keep - 1}")
        if keep == 1:
            path.unlink(missing_ok=True)
            return
        oldest.unlink(missing_ok=True)
        for i in range(keep - 2, 0, -1):
            src = path.with_name(f"{path.name}.{i}")
            if src.exists():
                src.rename(path.with_name(f"{path.name}.{i + 1}"))
        path.rename(path.with_name(f"{path.name}.1"))

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every queued record is on disk (tests, shutdown)."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        try:
            self._queue.put(None, timeout=5)
        except queue.Full:
            return
        self._thread.join(timeout=10)


def log_files(directory: Path, model: str) -> list[Path]:
    """Every payload log file of ``model``, oldest rotation first."""
    folder = Path(directory) / model
    if not folder.is_dir():
        return []

    def age(p: Path) -> tuple[str, int]:
        suffix = p.name.rsplit(".", 1)[-1]
        return (p.name.split(".jsonl")[0], -int(suffix) if suffix.isdigit() else 0)

    return sorted(folder.glob("payloads-*.jsonl*"), key=age)


def read_records(
    directory: Path, model: str, version: str | None = None
) -> Iterator[dict[str, Any]]:
    """Logged records of ``model`` (optionally one version), file by file; bad lines skipped."""
    for path in log_files(directory, model):
        with path.open("rb") as fh:
            for line in fh:
                try:
                    rec = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue  # a line cut by a crash mid-write
                if version is None or rec.get("version") == version:
                    yield rec
