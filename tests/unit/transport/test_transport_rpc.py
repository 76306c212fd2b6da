"""TransportServer and TransportClient over real sockets (Unix and TCP), no Ray."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rayfront import errors
from rayfront.transport.client import TransportClient, probe
from rayfront.transport.discovery import Endpoint
from rayfront.transport.frames import ConnectionLost
from rayfront.transport.server import TransportServer


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=20))  # type: ignore[arg-type]


@pytest.fixture
def sock_path() -> str:
    # A short path: pytest's tmp_path can exceed the 107-byte unix socket limit.
    path = f"/tmp/rf-fp-test-{os.getpid()}-{os.urandom(3).hex()}.sock"
    yield path
    if os.path.exists(path):
        os.unlink(path)


async def _double(tensors: dict[str, np.ndarray], meta: object = None) -> dict[str, np.ndarray]:
    return {"y": tensors["x"] * 2}


@pytest.mark.parametrize("transport", ["uds", "tcp"])
def test_client_gets_outputs_when_server_executes_over_each_transport(sock_path, transport):
    async def scenario() -> np.ndarray:
        server = TransportServer(_double, name="t")
        ep = await server.start(uds_path=sock_path, host="127.0.0.1")
        if transport == "tcp":
            ep = ep.model_copy(update={"uds": None})
        client = TransportClient(ep)
        try:
            return (await client.call({"x": np.arange(6, dtype=np.float32).reshape(2, 3)}))["y"]
        finally:
            await client.close()
            await server.close()

    out = run(scenario())
    np.testing.assert_array_equal(out, np.arange(6, dtype=np.float32).reshape(2, 3) * 2)


def test_client_uses_tcp_when_endpoint_is_on_another_node(sock_path):
    async def scenario() -> tuple[bool, float]:
        server = TransportServer(_double)
        ep = await server.start(uds_path=sock_path, host="127.0.0.1", node_id="node-a")
        os.unlink(sock_path)  # only TCP can work now
        client = TransportClient(ep, local_node_id="node-b")
        try:
            out = await client.call({"x": np.ones(1, np.float32)})
            return client.connected, float(out["y"][0])
        finally:
            await client.close()
            await server.close()

    assert run(scenario()) == (True, 2.0)


def test_client_refuses_when_remote_endpoint_has_no_tcp_address():
    ep = Endpoint(node_id="node-a", uds="/tmp/nowhere.sock")
    with pytest.raises(ValueError, match="has no TCP address and is on node 'node-a'"):
        TransportClient(ep, local_node_id="node-b")


def test_client_matches_responses_by_id_when_they_complete_out_of_order(sock_path):
    async def scenario() -> list[int]:
        gates = {i: asyncio.Event() for i in range(3)}
        finished: list[int] = []

        async def execute(
            tensors: dict[str, np.ndarray], meta: object = None
        ) -> dict[str, np.ndarray]:
            key = int(tensors["x"][0])
            await gates[key].wait()
            return {"y": tensors["x"] + 100}

        server = TransportServer(execute)
        client = TransportClient(await server.start(uds_path=sock_path))

        async def one(i: int) -> None:
            out = await client.call({"x": np.array([i], np.int64)})
            assert int(out["y"][0]) == i + 100
            finished.append(i)

        tasks = [asyncio.create_task(one(i)) for i in range(3)]
        while server.inflight < 3:  # all three pipelined on one connection
            await asyncio.sleep(0.001)
        assert client.inflight == 3
        for i in (2, 0, 1):
            gates[i].set()
            while i not in finished:
                await asyncio.sleep(0.001)
        await asyncio.gather(*tasks)
        await client.close()
        await server.close()
        return finished

    assert run(scenario()) == [2, 0, 1]


@pytest.mark.parametrize(
    ("raised", "expected", "message"),
    [
        (
            errors.NotFoundError("model 'm' has no version '9'"),
            errors.NotFoundError,
            "no version '9'",
        ),
        (errors.InvalidArgumentError("input 'x': bad"), errors.InvalidArgumentError, "input 'x'"),
        (errors.DeadlineExceededError("late"), errors.DeadlineExceededError, "late"),
        (
            ValueError("secret internals"),
            errors.InternalError,
            "model execution failed: ValueError",
        ),
    ],
)
def test_client_raises_same_error_class_when_replica_raises(sock_path, raised, expected, message):
    async def scenario() -> None:
        async def execute(
            tensors: dict[str, np.ndarray], meta: object = None
        ) -> dict[str, np.ndarray]:
            raise raised

        server = TransportServer(execute)
        client = TransportClient(await server.start(uds_path=sock_path))
        try:
            with pytest.raises(expected, match=message) as info:
                await client.call({"x": np.ones(1, np.float32)})
            assert type(info.value) is expected
            assert "secret" not in info.value.message
            # The connection survives an error answer.
            assert client.connected
        finally:
            await client.close()
            await server.close()

    run(scenario())


def test_client_maps_subclass_to_nearest_rayfront_error_when_replica_raises_custom_one(sock_path):
    class ModelSpecificError(errors.UnavailableError):
        pass

    async def scenario() -> None:
        async def execute(
            tensors: dict[str, np.ndarray], meta: object = None
        ) -> dict[str, np.ndarray]:
            raise ModelSpecificError("warming up")

        server = TransportServer(execute)
        client = TransportClient(await server.start(uds_path=sock_path))
        try:
            with pytest.raises(errors.UnavailableError, match="warming up") as info:
                await client.call({"x": np.ones(1, np.float32)})
            assert type(info.value) is errors.UnavailableError
        finally:
            await client.close()
            await server.close()

    run(scenario())


def test_client_carries_zero_row_and_bytes_tensors_when_sent_over_the_socket(sock_path):
    async def echo(tensors: dict[str, np.ndarray], meta: object = None) -> dict[str, np.ndarray]:
        return dict(tensors)

    async def scenario() -> dict[str, np.ndarray]:
        server = TransportServer(echo)
        client = TransportClient(await server.start(uds_path=sock_path))
        try:
            return await client.call(
                {
                    "empty": np.zeros((0, 4), np.float32),
                    "text": np.array([[b"a", b""], [b"ccc", b"d"]], dtype=object),
                    "big": np.arange(1 << 20, dtype=np.float32),  # 4 MiB: above the high water
                }
            )
        finally:
            await client.close()
            await server.close()

    out = run(scenario())
    assert out["empty"].shape == (0, 4)
    assert out["text"].tolist() == [[b"a", b""], [b"ccc", b"d"]]
    np.testing.assert_array_equal(out["big"], np.arange(1 << 20, dtype=np.float32))


def test_client_raises_connect_failed_when_nothing_listens(sock_path):
    async def scenario() -> None:
        client = TransportClient(Endpoint(uds=sock_path, replica="r1", pid=42))
        with pytest.raises(ConnectionLost, match="cannot reach replica r1 \\(pid 42\\)") as info:
            await client.call({"x": np.ones(1, np.float32)})
        assert info.value.connect_failed
        assert isinstance(info.value, errors.UnavailableError)

    run(scenario())


def test_client_fails_pending_then_reconnects_when_connection_is_lost(sock_path):
    """A replica that dies mid-request, then comes back at the same address."""

    async def scenario() -> float:
        got_request = asyncio.Event()
        holder: dict[str, TransportServer] = {}

        async def dying(tensors: dict[str, np.ndarray], meta: object) -> dict[str, np.ndarray]:
            got_request.set()
            for peer in list(holder["server"]._connections):
                peer.writer.transport.abort()  # as a SIGKILLed process would
            await asyncio.sleep(10)
            return {}

        dead = TransportServer(dying)
        holder["server"] = dead
        ep = await dead.start(uds_path=sock_path, replica="r1")
        client = TransportClient(ep)
        with pytest.raises(ConnectionLost, match=r"connection to replica r1 .* lost") as info:
            await client.call({"x": np.ones(1, np.float32)})
        assert got_request.is_set()
        assert not info.value.connect_failed
        assert not client.connected
        assert client.inflight == 0
        await dead.close(timeout_s=0)

        server = TransportServer(_double, token=ep.token)
        await server.start(uds_path=sock_path)
        try:
            out = await client.call({"x": np.full(1, 4.0, np.float32)})
            return float(out["y"][0])
        finally:
            await client.close()
            await server.close()

    assert run(scenario()) == 8.0


def test_client_drops_late_answer_when_caller_was_cancelled(sock_path):
    async def scenario() -> float:
        release = asyncio.Event()

        async def execute(
            tensors: dict[str, np.ndarray], meta: object = None
        ) -> dict[str, np.ndarray]:
            if float(tensors["x"][0]) == 0:
                await release.wait()
            return {"y": tensors["x"] * 2}

        server = TransportServer(execute)
        client = TransportClient(await server.start(uds_path=sock_path))
        first = asyncio.create_task(client.call({"x": np.zeros(1, np.float32)}))
        while server.inflight < 1:
            await asyncio.sleep(0.001)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert client.inflight == 0
        release.set()
        out = await client.call({"x": np.full(1, 3.0, np.float32)})
        await client.close()
        await server.close()
        return float(out["y"][0])

    assert run(scenario()) == 6.0


def test_server_close_finishes_inflight_and_refuses_new_when_draining(sock_path):
    async def scenario() -> None:
        release = asyncio.Event()

        async def execute(
            tensors: dict[str, np.ndarray], meta: object = None
        ) -> dict[str, np.ndarray]:
            await release.wait()
            return {"y": tensors["x"] + 1}

        server = TransportServer(execute, name="mlp v1")
        ep = await server.start(uds_path=sock_path)
        client = TransportClient(ep)
        pending = asyncio.create_task(client.call({"x": np.zeros(2, np.float32)}))
        while server.inflight < 1:
            await asyncio.sleep(0.001)
        closing = asyncio.create_task(server.close(timeout_s=10))
        await asyncio.sleep(0.01)
        assert not closing.done()  # waits for the running request
        # The open connection gets a retryable refusal; new connections are refused.
        with pytest.raises(ConnectionLost, match="mlp v1 is shutting down"):
            await client.call({"x": np.zeros(2, np.float32)})
        with pytest.raises(ConnectionLost, match="cannot reach"):
            await TransportClient(ep).call({"x": np.zeros(2, np.float32)})
        release.set()
        out = await pending
        np.testing.assert_array_equal(out["y"], np.ones(2, np.float32))
        await closing
        assert server.inflight == 0
        assert not Path(sock_path).exists()
        await client.close()

    run(scenario())


def test_server_start_rejects_when_socket_path_is_too_long():
    async def scenario() -> None:
        server = TransportServer(_double)
        with pytest.raises(ValueError, match="the limit is 107"):
            await server.start(uds_path="/tmp/" + "x" * 200)

    run(scenario())


def test_client_refuses_replica_when_it_does_not_know_the_token(sock_path):
    """A stale endpoint whose address another replica reuses must not get its batches."""

    async def scenario() -> None:
        server = TransportServer(_double)
        ep = await server.start(uds_path=sock_path)
        stale = ep.model_copy(update={"token": "0" * 32})
        try:
            with pytest.raises(ConnectionLost, match="could not prove it holds") as info:
                await TransportClient(stale).call({"x": np.ones(1, np.float32)})
            assert info.value.connect_failed
            assert server.inflight == 0
        finally:
            await server.close()

    run(scenario())


def test_probe_tells_live_endpoint_from_stale_or_missing_when_checked(sock_path):
    async def scenario() -> tuple[bool, bool, bool]:
        server = TransportServer(_double)
        ep = await server.start(uds_path=sock_path)
        try:
            live = await asyncio.to_thread(probe, ep)
            stale = await asyncio.to_thread(probe, ep.model_copy(update={"token": "x"}))
        finally:
            await server.close()
        gone = await asyncio.to_thread(probe, ep)
        return live, stale, gone

    assert run(scenario()) == (True, False, False)


def test_endpoint_repr_hides_token_when_logged():
    ep = Endpoint(uds="/tmp/x.sock", token="s3cret")
    assert "s3cret" not in repr(ep)
    assert "s3cret" not in ep.describe()


def test_client_leaves_replica_that_stops_answering_but_keeps_a_slow_one(sock_path):
    """A hung replica (its whole loop stuck, as under SIGSTOP) fails the calls waiting on it
    within the stall window; a replica merely busy for longer than that still answers."""
    import threading
    import time

    started = threading.Event()
    server_loop: dict[str, asyncio.AbstractEventLoop] = {}
    endpoint: dict[str, Endpoint] = {}

    async def slow(tensors: dict[str, np.ndarray], meta: object) -> dict[str, np.ndarray]:
        await asyncio.sleep(float(tensors["x"][0]))  # busy, but its loop still answers pings
        return {"y": tensors["x"]}

    def serve() -> None:
        async def main() -> None:
            server = TransportServer(slow, name="t")
            endpoint["ep"] = await server.start(uds_path=sock_path, replica="r1")
            server_loop["loop"] = asyncio.get_running_loop()
            started.set()
            await asyncio.sleep(60)

        asyncio.run(main())

    threading.Thread(target=serve, daemon=True).start()
    assert started.wait(10)

    async def scenario() -> tuple[float, float]:
        client = TransportClient(endpoint["ep"])
        client.stall_s = 0.6
        # Busy 1.5 s (2.5x the stall window): pongs keep it alive, the answer arrives.
        out = await client.call({"x": np.full(1, 1.5, np.float32)})
        assert float(out["y"][0]) == 1.5
        # Now hang the replica's loop entirely, with a call waiting on it.
        call = asyncio.create_task(client.call({"x": np.full(1, 0.2, np.float32)}))
        await asyncio.sleep(0.05)
        server_loop["loop"].call_soon_threadsafe(time.sleep, 5.0)
        start = time.monotonic()
        with pytest.raises(ConnectionLost, match="stopped answering"):
            await call
        left_after = time.monotonic() - start
        await client.close()
        return float(out["y"][0]), left_after

    _, left_after = run(scenario())
    assert left_after < 3.0  # left within ~stall_s, not after the 5 s hang


def test_replica_timing_travels_back_when_request_is_traced(sock_path):
    from rayfront.tracing import StageTiming
    from rayfront.transport.frames import RequestMeta

    seen: list[bool] = []

    async def timed(tensors: dict[str, np.ndarray], meta: RequestMeta) -> dict[str, np.ndarray]:
        seen.append(meta.timing is not None)
        if meta.timing is not None:  # what the replica's batcher fills in
            meta.timing.queue_s, meta.timing.compute_s = 0.25, 0.5
            meta.timing.batch_requests, meta.timing.batch_rows = 3, 6
        return {"y": tensors["x"] * 2}

    async def scenario() -> tuple[StageTiming, RequestMeta]:
        server = TransportServer(timed, name="t")
        ep = await server.start(uds_path=sock_path, host="127.0.0.1")
        client = TransportClient(ep)
        try:
            traced = RequestMeta(timing=StageTiming())
            await client.call({"x": np.ones((2, 3), np.float32)}, traced)
            plain = RequestMeta()
            await client.call({"x": np.ones((2, 3), np.float32)}, plain)
            return traced.timing, plain
        finally:
            await client.close()
            await server.close()

    timing, plain = run(scenario())
    assert timing == StageTiming(queue_s=0.25, compute_s=0.5, batch_requests=3, batch_rows=6)
    # An untraced request asks for nothing and gets nothing back.
    assert seen == [True, False] and plain.timing is None
