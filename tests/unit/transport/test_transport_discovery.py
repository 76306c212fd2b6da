"""Where replicas listen: key scheme, private socket directories, the stale-socket sweep."""

from __future__ import annotations

import os
import socket
import stat
import tempfile

from rayfront.transport.discovery import (
    SOCKET_DIR_PREFIX,
    SOCKET_NAME,
    endpoint_key,
    endpoint_prefix,
    private_socket_path,
    remove_socket_path,
    sweep_stale_sockets,
)


def test_endpoint_keys_share_the_app_prefix_when_listed():
    key = endpoint_key("rayfront--m--v1", "abc123")
    assert key.startswith(endpoint_prefix("rayfront--m--v1"))
    assert not key.startswith(endpoint_prefix("rayfront--m--v"))  # v1 is not v10's prefix
    assert not endpoint_key("rayfront--m--v10", "x").startswith(endpoint_prefix("rayfront--m--v1"))


def test_private_socket_path_is_in_a_fresh_0700_directory_when_made():
    first, second = private_socket_path(), private_socket_path()
    try:
        assert first != second  # never a shared, guessable directory
        for path in (first, second):
            directory = os.path.dirname(path)
            st = os.lstat(directory)
            assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()
            assert stat.S_IMODE(st.st_mode) == 0o700
            assert len(path.encode()) <= 107  # fits sun_path
    finally:
        remove_socket_path(first)
        remove_socket_path(second)
    assert not os.path.exists(os.path.dirname(first))


def test_sweep_removes_only_old_dead_socket_dirs_when_replica_starts():
    root = tempfile.mkdtemp(prefix="rf-sweep-root-")
    dirs = {}
    for name in ("dead", "live", "young"):
        directory = os.path.join(root, f"{SOCKET_DIR_PREFIX}{name}")
        os.mkdir(directory, 0o700)
        dirs[name] = directory
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listening.bind(os.path.join(dirs["live"], SOCKET_NAME))
    listening.listen(1)
    for name in ("dead", "young"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(os.path.join(dirs[name], SOCKET_NAME))  # bound, never listening: a killed replica
        s.close()
    os.mkdir(os.path.join(root, "unrelated"))
    for name in ("dead", "live"):
        old = os.lstat(dirs[name]).st_mtime - 3600
        os.utime(dirs[name], (old, old))
    try:
        assert sweep_stale_sockets(root) == [dirs["dead"]]
        assert sorted(os.listdir(root)) == sorted(
            ["unrelated", f"{SOCKET_DIR_PREFIX}live", f"{SOCKET_DIR_PREFIX}young"]
        )
    finally:
        listening.close()
        for name in ("live", "young"):
            remove_socket_path(os.path.join(dirs[name], SOCKET_NAME))
        os.rmdir(os.path.join(root, "unrelated"))
        os.rmdir(root)
