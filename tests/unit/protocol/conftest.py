"""The real HTTP (uvicorn) and gRPC servers over a fake DataPlane, for the protocol tests.

Both servers run on one asyncio loop in a background thread, bound to 127.0.0.1 on
free ports, once per test session; tests drive them with the real tritonclient clients.
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from protocol_fakes import ADMIN_TOKEN, HTTP_LIMITS, MAX_BODY, OFFLOAD, FakeDataPlane

from rayfront.protocol.http_server import uvicorn_server


@dataclass
class Servers:
    dataplane: FakeDataPlane
    loop: asyncio.AbstractEventLoop
    http_port: int
    grpc_port: int

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def call(self, coro: Any, timeout: float = 10) -> Any:
        """Run ``coro`` on the servers' loop (to touch loop-bound state such as Events)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    from rayfront.auth import AdminAuth
    from rayfront.protocol.grpc_service import create_grpc_server
    from rayfront.protocol.http_app import build_http_app
    from rayfront.protocol.shared_memory import SharedMemoryRegistry

    dp = FakeDataPlane()
    auth = AdminAuth(ADMIN_TOKEN)
    # The HTTP and gRPC front ends share one registry, as the ingress processes of a host do.
    shm = SharedMemoryRegistry(Path(tempfile.mkdtemp(prefix="rf-shm-test-")))
    app = build_http_app(dp, auth=auth, max_body_bytes=MAX_BODY, offload_bytes=OFFLOAD, shm=shm)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    http_port = sock.getsockname()[1]
    # The listener the gateway runs, with short deadlines so their tests stay quick.
    server = uvicorn_server(app, HTTP_LIMITS)
    started = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        state["loop"] = asyncio.get_running_loop()
        dp.slow_started = asyncio.Event()
        grpc_server, port = create_grpc_server(
            dp, "127.0.0.1", 0, auth=auth, max_message_bytes=MAX_BODY, shm=shm
        )
        await grpc_server.start()
        state["grpc_port"] = port
        serve = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if serve.done():
                serve.result()
            await asyncio.sleep(0.01)
        started.set()
        await serve
        await grpc_server.stop(0.5)

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # surface start-up failures to the fixture
            state["error"] = exc
            started.set()

    thread = threading.Thread(target=run, name="protocol-test-servers", daemon=True)
    thread.start()
    assert started.wait(20), "servers did not start"
    if "error" in state:
        raise state["error"]
    yield Servers(dp, state["loop"], http_port, state["grpc_port"])
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="session")
def http_client(servers: Servers) -> Iterator[Any]:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(
        servers.http_url, connection_timeout=10, network_timeout=10
    )
    yield client
    client.close()


@pytest.fixture(scope="session")
def grpc_client(servers: Servers) -> Iterator[Any]:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(servers.grpc_url)
    yield client
    client.close()
