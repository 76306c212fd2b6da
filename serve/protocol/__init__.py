"""KServe v2 / Triton protocol layer: codecs, validation, the HTTP ASGI app, the gRPC service.

Transport only, no Ray: the server implements :class:`~rayfront.protocol.dataplane.DataPlane`
and mounts :func:`build_http_app` / :class:`GRPCInferenceServicer` over it.

The public names below are imported lazily, so ``import rayfront.protocol.types`` does
not pull in grpc or tritonclient.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "InferRequest": "rayfront.protocol.types",
    "InferResponse": "rayfront.protocol.types",
    "RequestedOutput": "rayfront.protocol.types",
    "DataPlane": "rayfront.protocol.dataplane",
    "validate_request": "rayfront.protocol.validate",
    "batch_size": "rayfront.protocol.validate",
    "build_http_app": "rayfront.protocol.http_app",
    "Route": "rayfront.protocol.http_app",
    "RequestContext": "rayfront.protocol.http_app",
    "Response": "rayfront.protocol.http_app",
    "json_route": "rayfront.protocol.http_app",
    "GRPCInferenceServicer": "rayfront.protocol.grpc_service",
    "create_grpc_server": "rayfront.protocol.grpc_service",
    "start_grpc_server": "rayfront.protocol.grpc_service",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rayfront.protocol' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
