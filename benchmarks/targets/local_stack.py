"""rayfront's serving stack without Ray: N ingress processes and one replica process per model.

The same pieces ``rayfront serve`` runs inside Ray Serve replicas (the ingress assembly,
the KServe v2 HTTP and gRPC front ends, the transport, the replica's engine), started as
plain processes: the replica publishes its endpoint in a file (mode 0600) instead of
Ray's GCS KV, and the ingress processes share their ports with SO_REUSEPORT. It exists to
measure the data path where Ray cannot run (the lent GPU machines have no Ray) and to
separate the data path's cost from Ray's::

    python -m rayfront.benchmarks.targets.local_stack replica --repository R --model M --dir D
    python -m rayfront.benchmarks.targets.local_stack ingress --repository R --dir D --http-port 8000

:class:`LocalStackServer` starts and stops such a stack for the benchmark runner.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rayfront.benchmarks.run.procs import ServerProcess, clean_env, free_port
from rayfront.benchmarks.targets.target import HOST, Endpoint, Server
from rayfront.errors import FailedPreconditionError

logger = logging.getLogger(__name__)

ENDPOINT_SUFFIX = ".endpoint.json"


# --- the two processes -------------------------------------------------------------------


async def _replica(repository: Path, model: str, directory: Path, depth: int | None) -> None:
    from rayfront.engine import EngineSettings, VersionEngine
    from rayfront.metrics import ModelMetrics, RecorderGroup
    from rayfront.repository.layout import Repository
    from rayfront.stats import StatsAggregator
    from rayfront.telemetry import DirectoryBoard, Telemetry
    from rayfront.transport.discovery import private_socket_path, remove_socket_path
    from rayfront.transport.server import TransportServer

    repo = Repository(repository)
    spec = repo.spec(model)
    version = max(repo.served_versions(model))
    metrics, stats = ModelMetrics(), StatsAggregator()
    engine = await asyncio.to_thread(
        VersionEngine.load,
        spec,
        repo.version_dir(model, version),
        str(version),
        recorder=RecorderGroup(metrics, stats),
        settings=EngineSettings(depth=depth),
    )
    await engine.warm_up()
    telemetry = Telemetry(
        DirectoryBoard(directory / "board"),
        "local/",
        f"replica-{model}-{os.getpid()}",
        metrics.render,
        stats.snapshot,
    )
    telemetry.start()
    server = TransportServer(engine.handle, name=f"{model} v{version}")
    path = private_socket_path()
    endpoint = await server.start(uds_path=path, replica=f"{model}-{os.getpid()}")
    target = directory / f"{model}--{version}{ENDPOINT_SUFFIX}"
    tmp = target.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(endpoint.model_dump_json())
    os.replace(tmp, target)
    print(f"REPLICA READY {model} v{version} {engine.describe()}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    target.unlink(missing_ok=True)
    await server.close(timeout_s=10)
    remove_socket_path(path)
    await engine.close()
    await telemetry.stop()


class DirectoryLoader:
    """A :class:`rayfront.models.ModelLoader` whose replicas are found in a directory."""

    def __init__(self, root: Path, directory: Path) -> None:
        from rayfront.repository.layout import Repository
        from rayfront.transport.arena import Arena

        self._repo = Repository(root)
        self._dir = directory
        try:
            self._arena: Arena | None = Arena()
        except OSError as exc:  # no sealable memfd here: tensors go through the socket
            logger.warning("no shared-memory arena (%s)", exc)
            self._arena = None

    def repository(self) -> Any:
        return self._repo

    async def load(self, name: str, spec: Any = None) -> Any:
        from rayfront.models import ModelEntry, ServedVersion
        from rayfront.transport.discovery import Endpoint
        from rayfront.transport.pool import ReplicaPool

        # The replicas were started from config.pbtxt; an override cannot reach them here.
        spec = self._repo.spec(name)
        entry = ModelEntry(name=name, spec=spec)
        for v in self._repo.served_versions(name):
            path = self._dir / f"{name}--{v}{ENDPOINT_SUFFIX}"
            if not path.exists():
                continue
            pool = ReplicaPool(arena=self._arena, name=f"model {name!r} version {v}")
            pool.set_endpoints({str(path): Endpoint.model_validate_json(path.read_text())})
            entry.versions[str(v)] = ServedVersion(version=str(v), queue=pool)
        if not entry.versions:
            raise FailedPreconditionError(f"model {name!r}: no replica published in {self._dir}")
        return entry

    async def unload(self, entry: Any) -> None:
        for sv in entry.versions.values():
            await sv.queue.close()


async def _ingress(
    repository: Path, directory: Path, host: str, http_port: int, grpc_port: int
) -> None:
    import socket

    from rayfront.ingress import assemble
    from rayfront.telemetry import DirectoryBoard

    ingress = assemble(
        lambda recorder: DirectoryLoader(repository, directory),
        admin_token=None,
        shm_dir=directory / "shm",
        board=DirectoryBoard(directory / "board"),
        board_prefix="local/",
        process=f"ingress-{os.getpid()}",
    )
    await ingress.registry.load_all()
    assert ingress.dataplane.telemetry is not None
    ingress.dataplane.telemetry.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, http_port))
    sock.listen(4096)
    sock.setblocking(False)
    grpc_server, _ = ingress.grpc_server(host, grpc_port, reuse_port=True)
    await grpc_server.start()
    from rayfront.protocol.http_server import uvicorn_server

    print(f"INGRESS READY pid {os.getpid()}", flush=True)
    await uvicorn_server(ingress.http_app()).serve(sockets=[sock])
    await grpc_server.stop(1)
    await ingress.dataplane.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="role", required=True)
    rep = sub.add_parser("replica", help="One model's engine behind a transport server.")
    rep.add_argument("--repository", type=Path, required=True)
    rep.add_argument("--model", required=True)
    rep.add_argument("--dir", type=Path, required=True, help="Where endpoints are published.")
    rep.add_argument(
        "--depth", type=int, default=None, help="Batches in flight per instance (default: auto)."
    )
    ing = sub.add_parser("ingress", help="KServe v2 HTTP and gRPC front ends.")
    ing.add_argument("--repository", type=Path, required=True)
    ing.add_argument("--dir", type=Path, required=True)
    ing.add_argument("--host", default=HOST)
    ing.add_argument("--http-port", type=int, required=True)
    ing.add_argument("--grpc-port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    if args.role == "replica":
        run(_replica(args.repository, args.model, args.dir, args.depth))
    else:
        run(_ingress(args.repository, args.dir, args.host, args.http_port, args.grpc_port))


# --- the benchmark target ----------------------------------------------------------------


class LocalStackServer(Server):
    """One replica of one model and ``ingress`` ingress processes on one port, no Ray."""

    def __init__(
        self,
        log_dir: Path,
        model: str,
        repository: Path,
        label: str,
        protocols: tuple[str, ...] = ("http", "grpc"),
        ingress: int = 1,
    ) -> None:
        safe = label.replace(":", "-")
        self.name = f"local-{model}-{safe}-x{ingress}"
        self.log_dir = log_dir
        self.model = model
        self.repository = repository
        self.protocols = protocols
        self.ingress = ingress
        self.http_port = free_port(HOST)
        self.grpc_port = free_port(HOST)
        self.dir = Path(tempfile.mkdtemp(prefix="rf-local-"))
        self.processes: list[ServerProcess] = []

    def _spawn(self, name: str, args: list[str]) -> ServerProcess:
        cmd = [sys.executable, "-m", "rayfront.benchmarks.targets.local_stack", *args]
        proc = ServerProcess(
            name, cmd, self.log_dir / f"{name}.log", clean_env(drop=("RAY_ADDRESS",))
        )
        proc.start()
        self.processes.append(proc)
        return proc

    def start(self, timeout_s: float) -> float:
        t0 = time.monotonic()
        replica = self._spawn(
            f"{self.name}-replica",
            [
                "replica",
                "--repository",
                str(self.repository),
                "--model",
                self.model,
                "--dir",
                str(self.dir),
            ],
        )
        replica.wait_ready(
            lambda: any(self.dir.glob(f"{self.model}--*{ENDPOINT_SUFFIX}")),
            timeout_s,
            "the replica's endpoint file",
        )
        for i in range(self.ingress):
            proc = self._spawn(
                f"{self.name}-ingress{i}",
                [
                    "ingress", "--repository", str(self.repository), "--dir", str(self.dir),
                    "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port),
                ],
            )  # fmt: skip
            # One at a time, so every process of the port is up before measuring. The log
            # may hold an earlier run's lines: wait for this process's own pid.
            proc.wait_ready(
                lambda p=proc: (
                    p.proc is not None
                    and f"INGRESS READY pid {p.proc.pid}" in p.log_path.read_text(errors="replace")
                ),
                timeout_s,
                "INGRESS READY in the log",
            )
        return time.monotonic() - t0

    def endpoints(self) -> list[Endpoint]:
        out = []
        if "http" in self.protocols:
            out.append(Endpoint(f"local-http-x{self.ingress}", "http", HOST, self.http_port))
        if "grpc" in self.protocols:
            out.append(Endpoint(f"local-grpc-x{self.ingress}", "grpc", HOST, self.grpc_port))
        return out

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()
        shutil.rmtree(self.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
