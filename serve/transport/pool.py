"""Every replica of one model version, as an ingress sees them: pick one, send, retry.

One :class:`~rayfront.transport.client.TransportClient` per replica endpoint; the loader
feeds the endpoint set (found in the endpoint directory) through
:meth:`ReplicaPool.set_endpoints`. Each request goes to the replica with the fewest
requests in flight from this ingress; ties rotate. The replica's batcher forms batches
from every ingress's requests, so batches fill however many ingress processes there are.

A request whose connection fails before an answer is retried once on another replica
(inference is idempotent); the failed endpoint becomes a *suspect* that the loader
probes and, if it is really gone (a crashed replica never unpublishes), deletes from
the directory. With no endpoint known (start-up, a version scaled to zero, or every
replica just failed) requests take the ``fallback`` (the Serve handle, which queues
them and wakes the autoscaler), or wait a bounded time for an endpoint to appear.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from rayfront.errors import UnavailableError
from rayfront.tensors import TensorDict
from rayfront.tracing import StageTiming
from rayfront.transport.arena import Arena
from rayfront.transport.client import TransportClient
from rayfront.transport.discovery import Endpoint
from rayfront.transport.frames import ConnectionLost, RequestMeta

logger = logging.getLogger(__name__)

#: A retired endpoint's client closes once its calls are answered, or after this long.
RETIRE_TIMEOUT_S = 60.0
#: Without a fallback, how long a request waits for a replica to be discovered.
DISCOVERY_WAIT_S = 10.0

Fallback = Callable[[TensorDict, RequestMeta], Awaitable[TensorDict]]


class ReplicaPool:
    """Sends each request to the least-loaded live replica of one model version."""

    def __init__(
        self,
        *,
        fallback: Fallback | None = None,
        local_node_id: str | None = None,
        arena: Arena | None = None,
        name: str = "",
        discovery_wait_s: float = DISCOVERY_WAIT_S,
    ) -> None:
        self.fallback = fallback
        self.name = name
        self._local_node_id = local_node_id
        self._arena = arena
        self._discovery_wait_s = discovery_wait_s
        self._clients: dict[str, TransportClient] = {}
        self._ring: list[tuple[str, TransportClient]] = []
        self._turn = 0
        self._background: set[asyncio.Task[Any]] = set()
        self._known: dict[str, Endpoint] = {}
        self._available: asyncio.Event | None = None
        self._closing = False
        #: Endpoint keys whose connection failed; the loader probes them off the loop.
        self.suspects: set[str] = set()

    # -- what the loader sees ----------------------------------------------------------

    @property
    def endpoints(self) -> dict[str, Endpoint]:
        """The endpoint set last adopted (replaced whole, so other threads may read it)."""
        return self._known

    @property
    def live(self) -> int:
        """Replicas this pool can send to now."""
        return len(self._ring)

    @property
    def inflight(self) -> int:
        """Requests sent and not yet answered, over every replica."""
        return sum(c.inflight for _, c in self._ring)

    def set_endpoints(
        self, endpoints: dict[str, Endpoint], recovered: set[str] | frozenset[str] = frozenset()
    ) -> None:
        """Adopt the discovered endpoint set (on the event loop).

        ``recovered``: suspects the loader reached again, so they may be used anew.
        Suspects no longer published are forgotten.
        """
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
                client = TransportClient(
                    endpoint, local_node_id=self._local_node_id, arena=self._arena
                )
            except ValueError as exc:
                logger.warning("%s: skipping endpoint %s: %s", self.name, key, exc)
                continue
            self._clients[key] = client
            logger.info("%s: transport to %s", self.name, endpoint.describe())
        self._ring = list(self._clients.items())
        if self._ring and self._available is not None:
            self._available.set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _retire(self, key: str) -> None:
        """An endpoint left the directory (graceful stop): stop choosing it, let calls finish."""
        client = self._clients.pop(key)
        self._ring = list(self._clients.items())

        async def close_when_idle() -> None:
            await client.wait_idle(RETIRE_TIMEOUT_S)
            await client.close()

        self._spawn(close_when_idle())

    def _drop(self, key: str, exc: ConnectionLost) -> None:
        client = self._clients.pop(key, None)
        if client is None:
            return
        self._ring = list(self._clients.items())
        self.suspects.add(key)
        logger.warning("%s: dropped endpoint %s: %s", self.name, key, exc.message)
        self._spawn(client.close())

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

    async def submit(
        self,
        inputs: TensorDict,
        *,
        timeout_us: int | None = None,
        priority: int | None = None,
        timing: StageTiming | None = None,
    ) -> TensorDict:
        """Run one request on a replica (its batcher decides when); see the module docstring."""
        if self._closing:
            raise UnavailableError(f"{self.name}: shutting down; retry on another instance")
        meta = RequestMeta(timeout_us=timeout_us, priority=priority or 0, timing=timing)
        picked = self._pick()
        if picked is None:
            return await self._without_endpoint(inputs, meta)
        key, client = picked
        try:
            return await client.call(inputs, meta)
        except ConnectionLost as exc:
            self._drop(key, exc)
        retry = self._pick(exclude=key)
        if retry is None:
            return await self._without_endpoint(inputs, meta)
        key, client = retry
        try:
            return await client.call(inputs, meta)
        except ConnectionLost as exc:
            self._drop(key, exc)
            raise

    async def _without_endpoint(self, inputs: TensorDict, meta: RequestMeta) -> TensorDict:
        if self.fallback is not None:
            return await self.fallback(inputs, meta)
        if self._available is None:
            self._available = asyncio.Event()
        self._available.clear()
        try:
            async with asyncio.timeout(self._discovery_wait_s):
                await self._available.wait()
        except TimeoutError:
            raise UnavailableError(
                f"{self.name}: no replica is reachable (waited {self._discovery_wait_s:g}s "
                "for one); retry later"
            ) from None
        picked = self._pick()
        if picked is None:
            raise UnavailableError(f"{self.name}: no replica is reachable; retry later")
        return await picked[1].call(inputs, meta)

    async def close(self) -> None:
        """Stop taking requests; let those in flight finish, then close every connection."""
        self._closing = True
        clients = list(self._clients.values())
        self._clients.clear()
        self._ring = []
        for client in clients:
            await client.wait_idle(RETIRE_TIMEOUT_S)
            await client.close()
