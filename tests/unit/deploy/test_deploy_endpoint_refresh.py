"""Endpoint discovery in the Ray loader, with the GCS KV replaced by a dict (no Ray)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from rayfront.deploy import kv as ray_kv
from rayfront.deploy.ray_loader import RayModelLoader
from rayfront.settings import ServerSettings
from rayfront.transport.discovery import Endpoint
from rayfront.transport.pool import ReplicaPool
from rayfront.transport.server import TransportServer


@pytest.fixture
def kv(monkeypatch: pytest.MonkeyPatch) -> dict[str, Endpoint]:
    store: dict[str, Endpoint] = {}
    monkeypatch.setattr(
        ray_kv,
        "list_endpoints",
        lambda app: {k: v for k, v in store.items() if k.startswith(f"rayfront/ep/{app}/")},
    )
    monkeypatch.setattr(ray_kv, "delete", lambda key: store.pop(key, None))
    return store


def test_refresh_deletes_dead_suspect_and_readmits_live_one_when_probed(
    kv: dict[str, Endpoint], tmp_path: Path
):
    app = "rayfront--m--v1"
    dead = Endpoint(uds=f"/tmp/rf-fpd-{os.getpid()}-gone.sock", replica="dead")

    async def scenario() -> ReplicaPool:
        async def echo(tensors: Any, meta: Any) -> Any:
            return tensors

        server = TransportServer(echo)
        live = await server.start(uds_path=f"/tmp/rf-fpd-{os.getpid()}-live.sock", replica="live")
        kv[f"rayfront/ep/{app}/live"] = live
        kv[f"rayfront/ep/{app}/dead"] = dead
        kv["rayfront/ep/rayfront--m--v10/x"] = dead  # another app sharing the name prefix
        loader = RayModelLoader(ServerSettings(repository=tmp_path))
        loader._loop = asyncio.get_running_loop()
        backend = ReplicaPool()
        backend.set_endpoints(ray_kv.list_endpoints(app))
        assert backend.live == 2
        # Both connections failed at some point; the loader's thread probes them.
        backend.suspects |= {f"rayfront/ep/{app}/live", f"rayfront/ep/{app}/dead"}
        await asyncio.to_thread(loader._refresh_endpoints, app, backend)
        await asyncio.sleep(0)  # the update was handed to this loop thread-safely
        await backend.close()
        await server.close()
        return backend

    backend = asyncio.run(scenario())
    assert f"rayfront/ep/{app}/dead" not in kv  # a crashed replica never unpublishes itself
    assert "rayfront/ep/rayfront--m--v10/x" in kv
    assert backend.suspects == set()
    assert set(backend.endpoints) == {f"rayfront/ep/{app}/live"}


def test_refresh_adopts_new_replica_when_it_publishes(kv: dict[str, Endpoint], tmp_path: Path):
    app = "rayfront--m--v1"
    live: list[int] = []

    async def scenario() -> None:
        loader = RayModelLoader(ServerSettings(repository=tmp_path))
        loader._loop = asyncio.get_running_loop()
        backend = ReplicaPool()
        await asyncio.to_thread(loader._refresh_endpoints, app, backend)
        await asyncio.sleep(0)
        live.append(backend.live)  # nothing published yet
        kv[f"rayfront/ep/{app}/a"] = Endpoint(uds="/tmp/a.sock", replica="a")
        kv[f"rayfront/ep/{app}/b"] = Endpoint(uds="/tmp/b.sock", replica="b")
        await asyncio.to_thread(loader._refresh_endpoints, app, backend)
        await asyncio.sleep(0)
        live.append(backend.live)
        del kv[f"rayfront/ep/{app}/b"]
        await asyncio.to_thread(loader._refresh_endpoints, app, backend)
        await asyncio.sleep(0)
        live.append(backend.live)
        await backend.close()

    asyncio.run(scenario())
    assert live == [0, 2, 1]
