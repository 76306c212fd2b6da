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
import stat
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


SOCKET_DIR_PREFIX = "rayfront-fp-"
SOCKET_NAME = "replica.sock"


def _runtime_root() -> str:
    """$XDG_RUNTIME_DIR when it is a private directory of ours, else the temp directory."""
    root = os.environ.get("XDG_RUNTIME_DIR")
    if root:
        try:
            st = os.stat(root)
            if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) & 0o077 == 0:
                return root
        except OSError:
            pass
    return tempfile.gettempdir()


def private_socket_path() -> str:
    """A Unix socket path in a fresh directory only this user can enter (mode 0700).

    ``mkdtemp`` creates the directory atomically with a random name, so nobody can have
    made it first and wait there for our token or our tensors; the transport's handshake
    is the second line of defence. sun_path is 108 bytes, hence the short names.
    """
    directory = tempfile.mkdtemp(prefix=SOCKET_DIR_PREFIX, dir=_runtime_root())
    return os.path.join(directory, SOCKET_NAME)


def remove_socket_path(path: str) -> None:
    """Remove a socket and its private directory (a stopping replica)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(path))


def sweep_stale_sockets(root: str | None = None, *, min_age_s: float = 60.0) -> list[str]:
    """Remove private socket directories that nothing listens in any more (killed replicas).

    Only this user's directories older than ``min_age_s`` are tried, so a replica that is
    binding right now never loses its path. Returns the directories removed.
    """
    root = root or _runtime_root()
    removed: list[str] = []
    now = time.time()
    try:
        names = os.listdir(root)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(SOCKET_DIR_PREFIX):
            continue
        directory = os.path.join(root, name)
        path = os.path.join(directory, SOCKET_NAME)
        try:
            st = os.lstat(directory)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
                continue
            if now - st.st_mtime < min_age_s:
                continue
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(0.2)
                sock.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            remove_socket_path(path)
            if not os.path.exists(directory):
                removed.append(directory)
        except OSError:
            continue  # busy or not ours to judge: leave it
    return removed
