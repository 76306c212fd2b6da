"""What the ingress needs from a model version: run a batch, and how many may be in flight.

Implementations: :class:`~rayfront.transport.pool.ReplicaPool` (replicas over sockets),
:class:`~rayfront.transport.local.LocalBackend` (in this process) and, in the deploy
wing, a Ray Serve handle.
"""

from __future__ import annotations

from typing import Protocol

from rayfront.tensors import TensorDict


class VersionBackend(Protocol):
    """Executes batches for one model version."""

    async def execute(self, batch: TensorDict) -> TensorDict: ...

    def capacity(self) -> int:
        """Batches that may be in flight at once right now."""
        ...


class ReplicatedBackend(VersionBackend, Protocol):
    """A backend whose capacity follows a replica count the loader keeps current."""

    replicas: int
