"""Every replica of one model version, as the ingress sees them: pick one, send, retry.

The loader feeds the endpoint set (discovered in the directory) through
:meth:`ReplicaPool.set_endpoints`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from rayfront.tensors import TensorDict
from rayfront.transport.backend import ReplicatedBackend
from rayfront.transport.client import TransportClient
from rayfront.transport.discovery import Endpoint
from rayfront.transport.frames import ConnectionLost

logger = logging.getLogger(__name__)

# A retired endpoint's client closes once its calls are answered, or after this long.
RETIRE_TIMEOUT_S = 60.0


class ReplicaPool:
    """Sends each batch over the fast path to the least-loaded live replica.

    One :class:`~rayfront.transport.client.TransportClient` per replica endpoint; the loader feeds
    the endpoint set (discovered in Ray's GCS KV) through :meth:`set_endpoints`. A batch
    whose connection fails before an answer is retried once on another replica (inference
    is idempotent); the failed endpoint becomes a *suspect* that the loader probes and, if
    it is really gone (a crashed replica never unpublishes), deletes from the KV. With no
    endpoint known (startup, or every replica just failed) batches take the handle
    fallback, so correctness never depends on discovery.
    """

    def __init__(
        self,
        fallback: ReplicatedBackend,
        *,
        inflight_per_replica: int,
        local_node_id: str | None = None,
        name: str = "",
    ) -> None:
        if inflight_per_replica < 1:
            raise ValueError(f"inflight_per_replica must be >= 1, got {inflight_per_replica}")
        self.fallback = fallback
        self.name = name
        self._per_replica = inflight_per_replica
        self._local_node_id = local_node_id
        self._clients: dict[str, TransportClient] = {}
        self._ring: list[tuple[str, TransportClient]] = []
        self._turn = 0
        self._background: set[asyncio.Task[Any]] = set()
        self._known: dict[str, Endpoint] = {}
        #: Endpoint keys whose connection failed; the loader probes them off the loop.
        self.suspects: set[str] = set()
        #: Called on the event loop with the new capacity whenever it changes.
        self.on_capacity_change: Callable[[int], None] | None = None

    # -- what the loader sees ----------------------------------------------------------

    @property
    def replicas(self) -> int:
        """Running replicas per Serve's status (sizes the handle fallback)."""
        return self.fallback.replicas

    @replicas.setter
    def replicas(self, value: int) -> None:
        before = self.capacity()
        self.fallback.replicas = max(value, 1)
        self._capacity_changed(before)

    @property
    def endpoints(self) -> dict[str, Endpoint]:
        """The endpoint set last adopted (replaced whole, so other threads may read it)."""
        return self._known

    def capacity(self) -> int:
        live = len(self._clients)
        return self._per_replica * live if live else self.fallback.capacity()

    def set_endpoints(
        self, endpoints: dict[str, Endpoint], recovered: set[str] | frozenset[str] = frozenset()
    ) -> None:
        """Adopt the discovered endpoint set (on the event loop).

        ``recovered``: suspects the loader reached again, so they may be used anew.
        Suspects no longer published are forgotten.
        """
        before = self.capacity()
        self._known = dict(endpoints)
        self.suspects -= set(recovered)
        self.suspects &= set(endpoints)
        for key, client in list(self._clients.items()):
            if endpoints.get(key) != client.endpoint:
                self._retire(key)
        for key, endpoint in endpoints.items():
            if key in self._clients or key in self.suspects:
                continue
            try:
                client = TransportClient(endpoint, local_node_id=self._local_node_id)
            except ValueError as exc:
                logger.warning("%s: skipping fast-path endpoint %s: %s", self.name, key, exc)
                continue
            self._clients[key] = client
            logger.info("%s: fast path to %s", self.name, endpoint.describe())
        self._ring = list(self._clients.items())
        self._capacity_changed(before)

    def _capacity_changed(self, before: int) -> None:
        after = self.capacity()
        if after != before and self.on_capacity_change is not None:
            self.on_capacity_change(after)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _retire(self, key: str) -> None:
        """An endpoint left the KV (graceful stop): stop choosing it, let its calls finish."""
        client = self._clients.pop(key)
        self._ring = list(self._clients.items())

        async def close_when_idle() -> None:
            await client.wait_idle(RETIRE_TIMEOUT_S)
            await client.close()

        self._spawn(close_when_idle())

    def _drop(self, key: str, exc: ConnectionLost) -> None:
        client = self._clients.get(key)
        if client is None:
            return
        before = self.capacity()
        del self._clients[key]
        self._ring = list(self._clients.items())
        self.suspects.add(key)
        logger.warning("%s: dropped fast-path endpoint %s: %s", self.name, key, exc.message)
        self._spawn(client.close())
        self._capacity_changed(before)

    # -- data path ---------------------------------------------------------------------

    def _pick(self, exclude: str | None = None) -> tuple[str, TransportClient] | None:
        """Least in-flight calls; ties rotate so equal replicas share the load."""
        ring = self._ring
        n = len(ring)
        if n == 0:
            return None
        if n == 1:
            return None if ring[0][0] == exclude else ring[0]
        start = self._turn % n
        self._turn = start + 1
        best: tuple[str, TransportClient] | None = None
        best_load = 0
        for i in range(n):
            entry = ring[(start + i) % n]
            if entry[0] == exclude:
                continue
            load = entry[1].inflight
            if best is None or load < best_load:
                best, best_load = entry, load
                if load == 0:
                    break
        return best

    async def execute(self, batch: TensorDict) -> TensorDict:
        picked = self._pick()
        if picked is None:
            return await self.fallback.execute(batch)
        key, client = picked
        try:
            return await client.call(batch)
        except ConnectionLost as exc:
            self._drop(key, exc)
        retry = self._pick(exclude=key)
        if retry is None:
            return await self.fallback.execute(batch)
        key, client = retry
        try:
            return await client.call(batch)
        except ConnectionLost as exc:
            self._drop(key, exc)
            raise

    async def close(self) -> None:
        clients = list(self._clients.values())
        self._clients.clear()
        self._ring = []
        for client in clients:
            await client.close()
