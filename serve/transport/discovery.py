"""Where replicas listen, and how ingress processes find them.

A replica publishes one :class:`Endpoint` per process under
``rayfront/ep/<app>/<replica id>`` in a key-value directory (Ray's GCS KV under Serve,
see :mod:`rayfront.deploy.kv`), so every ingress finds every replica. The key scheme,
the Unix-socket paths and the clean-up of sockets left by killed replicas live here,
free of Ray.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import time

from pydantic import BaseModel, ConfigDict, Field

#: Key-value namespace and key prefix of published endpoints.
KV_NAMESPACE = "rayfront"
KV_PREFIX = "rayfront/ep/"


class Endpoint(BaseModel):
    """Where one replica's transport server listens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node_id: str = Field(default="", description="Ray node id of the replica ('' = unknown).")
    uds: str | None = Field(default=None, description="Unix socket path (same-node clients).")
    host: str | None = Field(default=None, description="TCP address for other nodes.")
    port: int | None = Field(default=None, ge=0, le=65535, description="TCP port.")
    pid: int = Field(default=0, ge=0, description="Process id of the replica (diagnostics).")
    replica: str = Field(default="", description="Serve replica unique id.")
    token: str = Field(
        default="", repr=False, description="Shared secret a client presents in its HELLO."
    )

    def describe(self) -> str:
        where = self.uds if self.uds else f"{self.host}:{self.port}"
        return f"replica {self.replica or '?'} (pid {self.pid}) at {where}"

    def reachable_by_uds(self, local_node_id: str | None) -> bool:
        """Whether a client on ``local_node_id`` should use the Unix socket (same node)."""
        return self.uds is not None and (local_node_id is None or local_node_id == self.node_id)


def endpoint_key(app_name: str, replica_id: str) -> str:
    return f"{KV_PREFIX}{app_name}/{replica_id}"


def endpoint_prefix(app_name: str) -> str:
    return f"{KV_PREFIX}{app_name}/"


def uds_path(app_name: str, replica_id: str) -> str:
    """A short socket path (sun_path is 108 bytes; Ray's session dirs are long)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in app_name)[-40:]
    return os.path.join(tempfile.gettempdir(), "rayfront-fp", f"{safe}-{replica_id}.sock")


def sweep_stale_sockets(directory: str, *, min_age_s: float = 60.0) -> list[str]:
    """Unlink sockets in ``directory`` that nothing listens on (left by killed replicas).

    Only files older than ``min_age_s`` are tried, so a replica that is binding right now
    never loses its path. Returns the paths removed.
    """
    removed: list[str] = []
    now = time.time()
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return removed
    for name in names:
        path = os.path.join(directory, name)
        try:
            if not name.endswith(".sock") or now - os.lstat(path).st_mtime < min_age_s:
                continue
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(0.2)
                sock.connect(path)
        except ConnectionRefusedError:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                removed.append(path)
        except OSError:
            continue  # gone already, not a socket, or busy: leave it
    return removed
