"""The rayfront target: ``rayfront serve`` as a subprocess, one per batching setting.

Each batching setting gets its own repository copy (see :func:`.models.make_variant`) and
its own server, so settings never share replicas or queues. One server offers both
endpoints, ``rayfront-http`` and ``rayfront-grpc``. It runs in its own local Ray instance:
``RAY_ADDRESS`` is removed from the child's environment.
"""

from __future__ import annotations

from pathlib import Path

from rayfront.benchmarks.run.bench_models import rayfront_command
from rayfront.benchmarks.run.procs import free_port, grpc_server_ready
from rayfront.benchmarks.targets.target import HOST, Endpoint, SubprocessServer


class RayfrontServer(SubprocessServer):
    """``rayfront serve --repository R --http-port P --grpc-port G --host 127.0.0.1``."""

    def __init__(
        self,
        log_dir: Path,
        model: str,
        repository: Path,
        batching_label: str,
        protocols: tuple[str, ...] = ("http", "grpc"),
        gateway_replicas: int = 1,
    ) -> None:
        safe = batching_label.replace(":", "-")
        super().__init__(f"rayfront-{model}-{safe}", log_dir, model)
        self.repository = repository
        self.protocols = protocols
        self.grpc_port = free_port(HOST)
        self.gateway_replicas = gateway_replicas

    def command(self) -> list[str]:
        return [
            *rayfront_command(),
            "serve",
            "--repository", str(self.repository),
            "--http-port", str(self.http_port),
            "--grpc-port", str(self.grpc_port),
            "--host", HOST,
            "--gateway-replicas", str(self.gateway_replicas),
        ]  # fmt: skip

    def ready(self) -> bool:
        if not super().ready():
            return False
        return "grpc" not in self.protocols or grpc_server_ready(HOST, self.grpc_port)

    def endpoints(self) -> list[Endpoint]:
        out: list[Endpoint] = []
        if "http" in self.protocols:
            out.append(Endpoint("rayfront-http", "http", HOST, self.http_port))
        if "grpc" in self.protocols:
            out.append(Endpoint("rayfront-grpc", "grpc", HOST, self.grpc_port))
        return out
