"""ReplicaPool: replica choice, retry on a lost connection, handle fallback, capacity."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable
from typing import Any

import numpy as np
import pytest

from rayfront.tensors import TensorDict
from rayfront.transport.discovery import Endpoint
from rayfront.transport.frames import ConnectionLost
from rayfront.transport.pool import ReplicaPool
from rayfront.transport.server import TransportServer


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=20))  # type: ignore[arg-type]


class FakeHandleBackend:
    """Stands in for RayHandleBackend: counts calls, answers with a marker."""

    def __init__(self, per_replica: int = 2) -> None:
        self.calls = 0
        self.replicas = 1
        self._per_replica = per_replica

    async def execute(self, batch: TensorDict) -> TensorDict:
        self.calls += 1
        return {"y": batch["x"] * 0 - 1, "via": np.array([b"handle"], dtype=object)}

    def capacity(self) -> int:
        return self._per_replica * self.replicas


class Replica:
    """A fast-path server that tags its answers with its name and can be held."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.path = f"/tmp/rf-fpb-{os.getpid()}-{name}-{os.urandom(2).hex()}.sock"
        self.gate = asyncio.Event()
        self.gate.set()
        self.seen = 0
        self.server = TransportServer(self._execute, name=name)

    async def _execute(self, tensors: TensorDict) -> TensorDict:
        self.seen += 1
        await self.gate.wait()
        return {"y": tensors["x"] * 2, "via": np.array([self.name.encode()], dtype=object)}

    async def start(self, token: str | None = None) -> Endpoint:
        return await self.server.start(uds_path=self.path, replica=self.name, token=token)


def _batch(value: float = 1.0) -> TensorDict:
    return {"x": np.full((2, 3), value, np.float32)}


def _via(out: TensorDict) -> str:
    return out["via"][0].decode()


def test_execute_uses_handle_fallback_when_no_endpoint_is_known():
    async def scenario() -> tuple[str, int, int]:
        fallback = FakeHandleBackend(per_replica=3)
        backend = ReplicaPool(fallback, inflight_per_replica=2)
        out = await backend.execute(_batch())
        return _via(out), fallback.calls, backend.capacity()

    assert run(scenario()) == ("handle", 1, 3)


def test_capacity_follows_live_endpoints_when_endpoints_change():
    async def scenario() -> list[int]:
        a, b = Replica("a"), Replica("b")
        eps = {"k/a": await a.start(), "k/b": await b.start()}
        seen: list[int] = []
        backend = ReplicaPool(FakeHandleBackend(per_replica=5), inflight_per_replica=2)
        backend.on_capacity_change = seen.append
        backend.set_endpoints(eps)
        backend.set_endpoints({"k/a": eps["k/a"]})
        backend.set_endpoints({})
        await backend.close()
        await a.server.close()
        await b.server.close()
        return seen

    assert run(scenario()) == [4, 2, 5]


def test_execute_sends_to_least_loaded_replica_when_one_is_busy():
    async def scenario() -> list[str]:
        a, b = Replica("a"), Replica("b")
        backend = ReplicaPool(FakeHandleBackend(), inflight_per_replica=2)
        backend.set_endpoints({"k/a": await a.start(), "k/b": await b.start()})
        a.gate.clear()
        b.gate.clear()
        first = asyncio.create_task(backend.execute(_batch()))
        while a.seen + b.seen < 1:
            await asyncio.sleep(0.001)
        busy = a if a.seen else b
        other = b if busy is a else a
        other.gate.set()
        vias = [_via(await backend.execute(_batch())) for _ in range(3)]
        busy.gate.set()
        vias.append(_via(await first))
        assert vias[:3] == [other.name] * 3
        await backend.close()
        await a.server.close()
        await b.server.close()
        return [busy.name]

    run(scenario())


def test_execute_spreads_batches_when_replicas_are_equally_idle():
    async def scenario() -> set[str]:
        a, b = Replica("a"), Replica("b")
        backend = ReplicaPool(FakeHandleBackend(), inflight_per_replica=2)
        backend.set_endpoints({"k/a": await a.start(), "k/b": await b.start()})
        vias = {_via(await backend.execute(_batch())) for _ in range(4)}
        await backend.close()
        await a.server.close()
        await b.server.close()
        return vias

    assert run(scenario()) == {"a", "b"}


def test_execute_retries_once_on_another_replica_when_first_is_unreachable():
    async def scenario() -> None:
        b = Replica("b")
        dead = Endpoint(uds=f"/tmp/rf-fpb-{os.getpid()}-gone.sock", replica="gone")
        capacities: list[int] = []
        fallback = FakeHandleBackend()
        backend = ReplicaPool(fallback, inflight_per_replica=2)
        backend.on_capacity_change = capacities.append
        backend.set_endpoints({"k/gone": dead, "k/b": await b.start()})
        for _ in range(3):  # whichever is picked first, every batch succeeds on b
            out = await backend.execute(_batch(2.0))
            assert _via(out) == "b"
            np.testing.assert_array_equal(out["y"], np.full((2, 3), 4.0, np.float32))
        assert backend.suspects == {"k/gone"}
        assert backend.capacity() == 2
        assert fallback.calls == 0
        # Discovery still lists the dead key: it stays out until the loader clears it.
        backend.set_endpoints({"k/gone": dead, "k/b": b.server.endpoint})
        assert backend.capacity() == 2
        assert capacities == [4, 2]
        await backend.close()
        await b.server.close()

    run(scenario())


def test_execute_falls_back_to_handle_when_only_replica_is_unreachable():
    async def scenario() -> tuple[str, int]:
        dead = Endpoint(uds=f"/tmp/rf-fpb-{os.getpid()}-gone.sock", replica="gone")
        fallback = FakeHandleBackend()
        backend = ReplicaPool(fallback, inflight_per_replica=2)
        backend.set_endpoints({"k/gone": dead})
        out = await backend.execute(_batch())
        return _via(out), fallback.calls

    assert run(scenario()) == ("handle", 1)


def test_execute_raises_unavailable_when_retry_also_fails():
    async def scenario() -> None:
        eps = {
            f"k/{n}": Endpoint(uds=f"/tmp/rf-fpb-{os.getpid()}-{n}.sock", replica=n)
            for n in ("x", "y")
        }
        fallback = FakeHandleBackend()
        backend = ReplicaPool(fallback, inflight_per_replica=2)
        backend.set_endpoints(eps)
        with pytest.raises(ConnectionLost, match="cannot reach replica"):
            await backend.execute(_batch())
        assert backend.suspects == set(eps)
        assert fallback.calls == 0
        # With both gone, the next batch takes the handle path.
        assert _via(await backend.execute(_batch())) == "handle"

    run(scenario())


def test_set_endpoints_readmits_suspect_when_loader_reports_it_recovered():
    async def scenario() -> None:
        b = Replica("b")
        ep = Endpoint(uds=b.path, replica="b", token="t-b")
        backend = ReplicaPool(FakeHandleBackend(), inflight_per_replica=2)
        backend.set_endpoints({"k/b": ep})
        assert _via(await backend.execute(_batch())) == "handle"  # b is not up yet
        assert backend.suspects == {"k/b"}
        await b.start(token="t-b")
        backend.set_endpoints({"k/b": ep}, recovered={"k/b"})
        assert backend.suspects == set()
        assert _via(await backend.execute(_batch())) == "b"
        backend.set_endpoints({})  # unpublished: suspects and clients are forgotten
        assert backend.capacity() == 2
        await backend.close()
        await b.server.close()

    run(scenario())


def test_set_endpoints_lets_inflight_batch_finish_when_endpoint_is_retired():
    async def scenario() -> str:
        a = Replica("a")
        backend = ReplicaPool(FakeHandleBackend(), inflight_per_replica=2)
        backend.set_endpoints({"k/a": await a.start()})
        a.gate.clear()
        pending = asyncio.create_task(backend.execute(_batch()))
        while a.seen < 1:
            await asyncio.sleep(0.001)
        backend.set_endpoints({})  # a unpublished (graceful stop)
        a.gate.set()
        out = await pending
        await a.server.close()
        return _via(out)

    assert run(scenario()) == "a"


def test_replicas_setter_reports_capacity_when_only_fallback_counts():
    async def scenario() -> list[int]:
        seen: list[int] = []
        backend = ReplicaPool(FakeHandleBackend(per_replica=2), inflight_per_replica=2)
        backend.on_capacity_change = seen.append
        backend.replicas = 3
        return seen

    assert run(scenario()) == [6]
