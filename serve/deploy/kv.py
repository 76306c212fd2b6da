"""The endpoint directory on Ray's GCS key-value store.

Replicas publish their transport endpoint here and ingress processes list them; the key
scheme is :mod:`rayfront.transport.discovery`'s. Ray's own authentication guards the
store, which is what makes the token inside an endpoint a secret.
"""

from __future__ import annotations

import logging

from rayfront.transport.discovery import KV_NAMESPACE, Endpoint, endpoint_prefix

logger = logging.getLogger(__name__)


def publish(key: str, value: bytes) -> None:
    from ray.experimental.internal_kv import _internal_kv_put

    _internal_kv_put(key, value, True, namespace=KV_NAMESPACE)


def delete(key: str) -> None:
    from ray.experimental.internal_kv import _internal_kv_del

    _internal_kv_del(key, namespace=KV_NAMESPACE)


def get(key: str) -> bytes | None:
    from ray.experimental.internal_kv import _internal_kv_get

    return _internal_kv_get(key, namespace=KV_NAMESPACE)


def deployed_config_key(app_name: str) -> str:
    """Where the digest of the configuration a version app was deployed with is kept."""
    return f"rayfront/deployed/{app_name}"


def list_endpoints(app_name: str) -> dict[str, Endpoint]:
    """The endpoints the app's replicas published (key -> endpoint)."""
    from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_list

    out: dict[str, Endpoint] = {}
    for raw_key in _internal_kv_list(endpoint_prefix(app_name), namespace=KV_NAMESPACE):
        key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
        value = _internal_kv_get(key, namespace=KV_NAMESPACE)
        if value is None:
            continue  # unpublished between list and get
        try:
            out[key] = Endpoint.model_validate_json(value)
        except ValueError as exc:
            logger.warning("ignoring malformed endpoint %s: %s", key, exc)
    return out


class KVBoard:
    """:class:`rayfront.telemetry.Board` on Ray's GCS KV (every process of the cluster)."""

    def put(self, key: str, value: bytes) -> None:
        publish(key, value)

    def items(self, prefix: str) -> dict[str, bytes]:
        from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_list

        out: dict[str, bytes] = {}
        for raw_key in _internal_kv_list(prefix, namespace=KV_NAMESPACE):
            key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
            value = _internal_kv_get(key, namespace=KV_NAMESPACE)
            if value is not None:
                out[key] = value
        return out

    def delete(self, key: str) -> None:
        delete(key)


def telemetry_prefix(app_prefix: str) -> str:
    """Where one server's processes publish their telemetry snapshots."""
    return f"rayfront/telemetry/{app_prefix}/"
