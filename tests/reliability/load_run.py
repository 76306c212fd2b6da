"""A bounded load run that classifies every request: ok, refused, hung or wrong.

Each worker thread has its own ``tritonclient.http`` client and sends digits requests with
its own random pixels, checking every answer against ONNX Runtime on the same pixels, so
an answer that belongs to another request is caught (``wrong``). An error returned before
the client's timeout is ``refused`` (the client knows and can retry); no answer within
the timeout is ``hung``. Faults are injected while it runs.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tritonclient.http as httpclient

HUNG_S = 45.0


@dataclass
class Outcome:
    t: float  # seconds since the run started, at the answer
    kind: str  # ok / refused / hung / wrong
    detail: str = ""


@dataclass
class LoadReport:
    outcomes: list[Outcome] = field(default_factory=list)
    duration_s: float = 0.0

    def count(self, kind: str) -> int:
        return sum(1 for o in self.outcomes if o.kind == kind)

    @property
    def sent(self) -> int:
        return len(self.outcomes)

    def summary(self) -> dict[str, Any]:
        refused = [o for o in self.outcomes if o.kind == "refused"]
        return {
            "sent": self.sent,
            "ok": self.count("ok"),
            "refused": len(refused),
            "hung": self.count("hung"),
            "wrong": self.count("wrong"),
            "refused_window_s": round(refused[-1].t - refused[0].t, 1) if refused else 0.0,
            "refused_samples": sorted({o.detail for o in refused})[:3],
        }

    def ok_after(self, t: float) -> int:
        return sum(1 for o in self.outcomes if o.kind == "ok" and o.t >= t)

    def not_ok_after(self, t: float) -> int:
        return sum(1 for o in self.outcomes if o.kind != "ok" and o.t >= t)


class LoadRun:
    """``concurrency`` closed-loop clients for ``duration_s`` against ``url`` (host:port)."""

    def __init__(self, url: str, session: Any, concurrency: int = 16, duration_s: float = 15.0):
        self.url = url
        self.session = session
        self.concurrency = concurrency
        self.duration_s = duration_s
        self.report = LoadReport()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._start = 0.0

    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def start(self) -> LoadRun:
        self._start = time.monotonic()
        self._threads = [
            threading.Thread(target=self._worker, args=(i,), daemon=True)
            for i in range(self.concurrency)
        ]
        for t in self._threads:
            t.start()
        return self

    def join(self) -> LoadReport:
        for t in self._threads:
            t.join(self.duration_s + HUNG_S + 30)
        self.report.duration_s = self.elapsed()
        return self.report

    def _record(self, kind: str, detail: str = "") -> None:
        with self._lock:
            self.report.outcomes.append(Outcome(self.elapsed(), kind, detail[:160]))

    def _worker(self, index: int) -> None:
        rng = np.random.default_rng(1000 + index)
        client: httpclient.InferenceServerClient | None = None
        while self.elapsed() < self.duration_s:
            x = rng.random((int(rng.integers(1, 4)), 1, 8, 8), dtype=np.float32)
            (want,) = self.session.run(["logits"], {"pixels": x})
            sent = time.monotonic()
            try:
                if client is None:
                    client = httpclient.InferenceServerClient(
                        self.url, connection_timeout=HUNG_S, network_timeout=HUNG_S
                    )
                inp = httpclient.InferInput("pixels", list(x.shape), "FP32")
                inp.set_data_from_numpy(x)
                got = client.infer("digits", [inp]).as_numpy("logits")
            except Exception as exc:  # classified below; every failure is recorded
                took = time.monotonic() - sent
                kind = "hung" if took >= HUNG_S - 1 else "refused"
                self._record(kind, f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
                if client is not None:
                    client.close()
                client = None  # a fresh connection, as a client library would retry
                time.sleep(0.05)
                continue
            if got is None or got.shape != want.shape or not np.allclose(got, want, atol=1e-4):
                self._record("wrong", f"shape {None if got is None else got.shape}")
            else:
                self._record("ok")
        if client is not None:
            client.close()
