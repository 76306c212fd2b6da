"""ReplicaPool: replica choice, retry on a lost connection, handle fallback, discovery wait."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable
from typing import Any

import numpy as np
import pytest

from rayfront.errors import UnavailableError
from rayfront.tensors import TensorDict
from rayfront.transport.discovery import Endpoint
from rayfront.transport.frames import ConnectionLost, RequestMeta
from rayfront.transport.pool import ReplicaPool
from rayfront.transport.server import TransportServer


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=20))  # type: ignore[arg-type]


class FakeHandle:
    """Stands in for the Serve-handle fallback: counts calls, answers with a marker."""

    def __init__(self) -> None:
        self.calls: list[RequestMeta] = []

    async def __call__(self, inputs: TensorDict, meta: RequestMeta) -> TensorDict:
        self.calls.append(meta)
        return {"y": inputs["x"] * 0 - 1, "via": np.array([b"handle"], dtype=object)}


class Replica:
    """A transport server that tags its answers with its name and can be held."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.path = f"/tmp/rf-fpb-{os.getpid()}-{name}-{os.urandom(2).hex()}.sock"
        self.gate = asyncio.Event()
        self.gate.set()
        self.seen = 0
        self.metas: list[RequestMeta] = []
        self.server = TransportServer(self._execute, name=name)

    async def _execute(self, tensors: TensorDict, meta: RequestMeta) -> TensorDict:
        self.seen += 1
        self.metas.append(meta)
        await self.gate.wait()
        return {"y": tensors["x"] * 2, "via": np.array([self.name.encode()], dtype=object)}

    async def start(self, token: str | None = None) -> Endpoint:
        if token is not None:
            self.server = TransportServer(self._execute, name=self.name, token=token)
        return await self.server.start(uds_path=self.path, replica=self.name)


def _request(value: float = 1.0) -> TensorDict:
    return {"x": np.full((2, 3), value, np.float32)}


def _via(out: TensorDict) -> str:
    return out["via"][0].decode()


def test_submit_uses_handle_fallback_when_no_endpoint_is_known():
    async def scenario() -> tuple[str, list[RequestMeta]]:
        handle = FakeHandle()
        pool = ReplicaPool(fallback=handle)
        out = await pool.submit(_request(), timeout_us=900, priority=2)
        return _via(out), handle.calls

    via, calls = run(scenario())
    assert via == "handle"
    assert [(m.timeout_us, m.priority) for m in calls] == [(900, 2)]


def test_submit_waits_for_discovery_when_there_is_no_fallback():
    async def scenario() -> str:
        a = Replica("a")
        pool = ReplicaPool(discovery_wait_s=5)
        pending = asyncio.create_task(pool.submit(_request()))
        await asyncio.sleep(0.05)
        assert not pending.done()  # held until an endpoint appears, not refused
        pool.set_endpoints({"k/a": await a.start()})
        out = await pending
        await pool.close()
        await a.server.close()
        return _via(out)

    assert run(scenario()) == "a"


def test_submit_refuses_after_discovery_wait_when_no_replica_appears():
    async def scenario() -> None:
        pool = ReplicaPool(discovery_wait_s=0.05, name="model 'm' version 1")
        with pytest.raises(UnavailableError, match=r"model 'm' version 1: no replica is reachable"):
            await pool.submit(_request())

    run(scenario())


def test_submit_carries_timeout_and_priority_to_the_replica_when_given():
    async def scenario() -> RequestMeta:
        a = Replica("a")
        pool = ReplicaPool()
        pool.set_endpoints({"k/a": await a.start()})
        await pool.submit(_request(), timeout_us=1234, priority=3)
        await pool.close()
        await a.server.close()
        return a.metas[0]

    meta = run(scenario())
    assert (meta.timeout_us, meta.priority) == (1234, 3)


def test_live_count_follows_endpoints_when_endpoints_change():
    async def scenario() -> list[int]:
        a, b = Replica("a"), Replica("b")
        eps = {"k/a": await a.start(), "k/b": await b.start()}
        pool = ReplicaPool(fallback=FakeHandle())
        seen = [pool.live]
        pool.set_endpoints(eps)
        seen.append(pool.live)
        pool.set_endpoints({"k/a": eps["k/a"]})
        seen.append(pool.live)
        pool.set_endpoints({})
        seen.append(pool.live)
        await pool.close()
        await a.server.close()
        await b.server.close()
        return seen

    assert run(scenario()) == [0, 2, 1, 0]


def test_submit_sends_to_least_loaded_replica_when_one_is_busy():
    async def scenario() -> None:
        a, b = Replica("a"), Replica("b")
        pool = ReplicaPool(fallback=FakeHandle())
        pool.set_endpoints({"k/a": await a.start(), "k/b": await b.start()})
        a.gate.clear()
        b.gate.clear()
        first = asyncio.create_task(pool.submit(_request()))
        while a.seen + b.seen < 1:
            await asyncio.sleep(0.001)
        busy = a if a.seen else b
        other = b if busy is a else a
        other.gate.set()
        vias = [_via(await pool.submit(_request())) for _ in range(3)]
        busy.gate.set()
        await first
        assert vias == [other.name] * 3
        await pool.close()
        await a.server.close()
        await b.server.close()

    run(scenario())


def test_submit_spreads_requests_when_replicas_are_equally_idle():
    async def scenario() -> set[str]:
        a, b = Replica("a"), Replica("b")
        pool = ReplicaPool(fallback=FakeHandle())
        pool.set_endpoints({"k/a": await a.start(), "k/b": await b.start()})
        vias = {_via(await pool.submit(_request())) for _ in range(4)}
        await pool.close()
        await a.server.close()
        await b.server.close()
        return vias

    assert run(scenario()) == {"a", "b"}


def test_submit_retries_once_on_another_replica_when_first_is_unreachable():
    async def scenario() -> None:
        b = Replica("b")
        dead = Endpoint(uds=f"/tmp/rf-fpb-{os.getpid()}-gone.sock", replica="gone")
        handle = FakeHandle()
        pool = ReplicaPool(fallback=handle)
        pool.set_endpoints({"k/gone": dead, "k/b": await b.start()})
        for _ in range(3):  # whichever is picked first, every request succeeds on b
            out = await pool.submit(_request(2.0))
            assert _via(out) == "b"
            np.testing.assert_array_equal(out["y"], np.full((2, 3), 4.0, np.float32))
        assert pool.suspects == {"k/gone"}
        assert pool.live == 1
        assert handle.calls == []
        # Discovery still lists the dead key: it stays out until the loader clears it.
        pool.set_endpoints({"k/gone": dead, "k/b": b.server.endpoint})
        assert pool.live == 1
        await pool.close()
        await b.server.close()

    run(scenario())


def test_submit_falls_back_to_handle_when_only_replica_is_unreachable():
    async def scenario() -> tuple[str, int]:
        dead = Endpoint(uds=f"/tmp/rf-fpb-{os.getpid()}-gone.sock", replica="gone")
        handle = FakeHandle()
        pool = ReplicaPool(fallback=handle)
        pool.set_endpoints({"k/gone": dead})
        out = await pool.submit(_request())
        return _via(out), len(handle.calls)

    assert run(scenario()) == ("handle", 1)


def test_submit_raises_unavailable_when_retry_also_fails():
    async def scenario() -> None:
        eps = {
            f"k/{n}": Endpoint(uds=f"/tmp/rf-fpb-{os.getpid()}-{n}.sock", replica=n)
            for n in ("x", "y")
        }
        handle = FakeHandle()
        pool = ReplicaPool(fallback=handle)
        pool.set_endpoints(eps)
        with pytest.raises(ConnectionLost, match="cannot reach replica"):
            await pool.submit(_request())
        assert pool.suspects == set(eps)
        assert handle.calls == []
        # With both gone, the next request takes the handle path.
        assert _via(await pool.submit(_request())) == "handle"

    run(scenario())


def test_set_endpoints_readmits_suspect_when_loader_reports_it_recovered():
    async def scenario() -> None:
        b = Replica("b")
        ep = Endpoint(uds=b.path, replica="b", token="t-b")
        pool = ReplicaPool(fallback=FakeHandle())
        pool.set_endpoints({"k/b": ep})
        assert _via(await pool.submit(_request())) == "handle"  # b is not up yet
        assert pool.suspects == {"k/b"}
        await b.start(token="t-b")
        pool.set_endpoints({"k/b": ep}, recovered={"k/b"})
        assert pool.suspects == set()
        assert _via(await pool.submit(_request())) == "b"
        pool.set_endpoints({})  # unpublished: suspects and clients are forgotten
        assert pool.live == 0
        await pool.close()
        await b.server.close()

    run(scenario())


def test_set_endpoints_lets_inflight_request_finish_when_endpoint_is_retired():
    async def scenario() -> str:
        a = Replica("a")
        pool = ReplicaPool(fallback=FakeHandle())
        pool.set_endpoints({"k/a": await a.start()})
        a.gate.clear()
        pending = asyncio.create_task(pool.submit(_request()))
        while a.seen < 1:
            await asyncio.sleep(0.001)
        pool.set_endpoints({})  # a unpublished (graceful stop)
        a.gate.set()
        out = await pending
        await a.server.close()
        return _via(out)

    assert run(scenario()) == "a"


def test_close_refuses_new_requests_when_pool_is_closing():
    async def scenario() -> None:
        pool = ReplicaPool(fallback=FakeHandle(), name="model 'm' version 1")
        await pool.close()
        with pytest.raises(UnavailableError, match="shutting down"):
            await pool.submit(_request())

    run(scenario())
