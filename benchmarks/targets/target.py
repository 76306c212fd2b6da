"""Served targets: start a server, expose its endpoints, measure one point, stop it.

A :class:`Server` is one process (or one in-process object) that the sweep starts once
and measures at every concurrency level through each of its :class:`Endpoint` s; rayfront
offers two endpoints (HTTP and gRPC) from one server. Subprocess servers bind 127.0.0.1
on free ports and are always stopped in ``finally`` blocks (see :mod:`.procs`).

The runtime-level targets (``raw`` in :mod:`.raw` and ``batcher`` in :mod:`.batcher_target`)
never import Ray, so they run on hosts without it.
"""

from __future__ import annotations

import logging
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rayfront.benchmarks.load import closed_loop as client
from rayfront.benchmarks.load import wire
from rayfront.benchmarks.load.closed_loop import LoopResult, Tick
from rayfront.benchmarks.run.procs import ServerProcess, clean_env, free_port, http_status

logger = logging.getLogger(__name__)

Protocol = Literal["http", "grpc"]
HOST = "127.0.0.1"

# Environment that would point a child at another Ray cluster (the plain Serve baseline sets
# its own performance knobs).
_RAY_ENV_DROP = ("RAY_ADDRESS", "RAY_SERVE_THROUGHPUT_OPTIMIZED")


@dataclass(frozen=True, slots=True)
class Workload:
    """What every request carries: one model's inputs (batch dim = rows per request)."""

    model: str
    inputs: dict[str, np.ndarray]
    output: str
    version: str = ""
    route_key: str | None = None

    @property
    def rows(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A protocol endpoint of a started server."""

    target: str
    protocol: Protocol
    host: str
    port: int


@dataclass(slots=True)
class MeasureOptions:
    """Per-point knobs shared by every endpoint."""

    duration_s: float
    warmup_s: float
    timeout_s: float
    grpc_channels: int = 4
    on_tick: Tick | None = field(default=None)


def measure_endpoint(
    endpoint: Endpoint, work: Workload, concurrency: int, opts: MeasureOptions
) -> LoopResult:
    """One closed-loop point against ``endpoint`` with the built-in client."""
    if endpoint.protocol == "grpc":
        payload = wire.grpc_infer_request(work.model, work.inputs, work.version, work.route_key)
        return client.run_async(
            client.grpc_point(
                endpoint.host,
                endpoint.port,
                payload,
                work.output,
                work.rows,
                concurrency,
                opts.duration_s,
                opts.warmup_s,
                opts.timeout_s,
                channels=opts.grpc_channels,
                on_tick=opts.on_tick,
            ),
            # grpc.aio drives its own completion queue; keep it on the stock asyncio loop.
            use_uvloop=False,
        )
    body, head_len = wire.encode_infer_body(work.inputs, [work.output])
    headers = {wire.ROUTE_KEY_HEADER: work.route_key} if work.route_key else None
    request = wire.build_http_request(
        endpoint.host,
        endpoint.port,
        wire.infer_path(work.model, work.version),
        body,
        head_len,
        headers,
    )
    return client.run_async(
        client.http_point(
            endpoint.host,
            endpoint.port,
            request,
            concurrency,
            opts.duration_s,
            opts.warmup_s,
            opts.timeout_s,
            check=client.response_check(work.output, work.rows),
            on_tick=opts.on_tick,
        )
    )


class Server(ABC):
    """Something the sweep starts once and measures through its endpoints."""

    name: str = "server"

    @abstractmethod
    def start(self, timeout_s: float) -> float:
        """Start and wait until ready; return seconds to ready. Raise UnavailableError on failure."""

    @abstractmethod
    def endpoints(self) -> list[Endpoint]:
        """Endpoints to measure, after :meth:`start`."""

    @abstractmethod
    def stop(self) -> None:
        """Stop and release everything; safe to call twice or after a failed start."""


class SubprocessServer(Server):
    """A server run as a child process and probed over HTTP for readiness."""

    def __init__(self, name: str, log_dir: Path, model: str) -> None:
        self.name = name
        self.log_dir = log_dir
        self.model = model
        self.http_port = free_port(HOST)
        self.process: ServerProcess | None = None

    @abstractmethod
    def command(self) -> list[str]:
        """The child's command line."""

    def env(self) -> dict[str, str]:
        return clean_env(drop=_RAY_ENV_DROP)

    def ready(self) -> bool:
        return (
            http_status(HOST, self.http_port, "/v2/health/ready") == 200
            and http_status(HOST, self.http_port, f"/v2/models/{self.model}/ready") == 200
        )

    def start(self, timeout_s: float) -> float:
        self.process = ServerProcess(
            self.name, self.command(), self.log_dir / f"{self.name}.log", self.env()
        )
        self.process.start()
        return self.process.wait_ready(
            self.ready, timeout_s, f"GET :{self.http_port}/v2/health/ready"
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None


def _model_server_command(server: Any, module: str, *extra: str) -> list[str]:
    """The command line of a baseline server module serving one model file over HTTP."""
    cmd = [
        sys.executable, "-m", f"rayfront.benchmarks.targets.{module}",
        "--model-path", str(server.model_path),
        "--model-name", server.model,
        "--host", HOST,
        "--port", str(server.http_port),
        "--device", server.device,
        *extra,
    ]  # fmt: skip
    return [*cmd, "--tensorrt"] if server.tensorrt else cmd


class BareServer(SubprocessServer):
    """The bare uvicorn KServe v2 baseline (:mod:`.bare_asgi`)."""

    def __init__(
        self,
        log_dir: Path,
        model: str,
        model_path: Path,
        device: str,
        tensorrt: bool,
        workers: int = 1,
    ) -> None:
        super().__init__(f"bare-{model}" + (f"-x{workers}" if workers > 1 else ""), log_dir, model)
        self.model_path = model_path
        self.device = device
        self.tensorrt = tensorrt
        self.workers = workers

    def command(self) -> list[str]:
        return _model_server_command(self, "bare_asgi", "--workers", str(self.workers))

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint("bare", "http", HOST, self.http_port)]


class PlainServeServer(SubprocessServer):
    """Plain Ray Serve, configured as a competent user would (:mod:`.serve_plain`), own Ray."""

    def __init__(
        self,
        log_dir: Path,
        model: str,
        model_path: Path,
        device: str,
        tensorrt: bool,
        max_batch_size: int = 32,
    ) -> None:
        super().__init__(f"serve-{model}", log_dir, model)
        self.model_path = model_path
        self.device = device
        self.tensorrt = tensorrt
        self.max_batch_size = max_batch_size

    def command(self) -> list[str]:
        return _model_server_command(
            self, "serve_plain", "--max-batch-size", str(self.max_batch_size)
        )

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint("serve", "http", HOST, self.http_port)]
