"""What the HTTP and gRPC adapters need from the server: two interfaces, kept apart.

:class:`InferenceService` is the data plane (health, metadata, statistics, inference);
:class:`RepositoryService` is repository administration (index, load, unload), which
the adapters guard with the admin check of :mod:`rayfront.auth` before calling it. Each
method maps to one KServe v2 / Triton endpoint. Implementations raise
:mod:`rayfront.errors` exceptions; the adapters turn those into status codes. Metadata
shapes follow the KServe v2 JSON (dicts), so HTTP returns them as-is and gRPC builds its
protobuf messages from them.
"""

from __future__ import annotations

from typing import Any, Protocol

from rayfront.protocol.types import InferRequest, InferResponse
from rayfront.tracing import Tracer


class InferenceService(Protocol):
    """The data plane a transport serves (implemented by :mod:`rayfront.dataplane`)."""

    #: Starts a trace per sampled request (:mod:`rayfront.tracing`); None = tracing off.
    tracer: Tracer | None

    async def live(self) -> bool: ...

    async def ready(self) -> bool: ...

    async def server_metadata(self) -> dict[str, Any]:
        """``{"name", "version", "extensions": [...]}``."""
        ...

    async def model_metadata(self, name: str, version: str = "") -> dict[str, Any]:
        """``{"name", "versions": [str], "platform", "inputs": [{"name","datatype","shape"}], "outputs": [...]}``."""
        ...

    async def model_ready(self, name: str, version: str = "") -> bool: ...

    async def model_config(self, name: str, version: str = "") -> Any:
        """The model's ``ModelConfig`` protobuf message (tritonclient's model_config_pb2)."""
        ...

    async def statistics(self, name: str = "", version: str = "") -> dict[str, Any]:
        """Triton ``ModelStatisticsResponse`` as a dict (``{"model_stats": [...]}``)."""
        ...

    async def infer(self, request: InferRequest) -> InferResponse: ...

    async def metrics_text(self) -> bytes:
        """Prometheus exposition text."""
        ...


class RepositoryService(Protocol):
    """Repository administration (implemented by :class:`rayfront.models.ModelRegistry`)."""

    async def repository_index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        """``[{"name", "version", "state", "reason"}]``."""
        ...

    async def load_model(self, name: str, config: str | None = None) -> None:
        """(Re)load ``name``; ``config`` is Triton's JSON configuration override."""
        ...

    async def unload_model(self, name: str) -> None: ...
