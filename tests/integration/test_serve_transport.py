"""The transport (ingress -> ModelVersion over rayfront.transport) under real Ray Serve.

Every other integration test exercises it too; these check what only it does: requests
really travel over the replicas' private Unix sockets, and a SIGKILLed replica is
replaced and found again.

Which sockets a replica listens on, and whether an ingress is connected, is read from
``/proc``: the replica process's socket inodes, and ``/proc/net/unix`` (an accepted
connection shows up there with the listening socket's path), so no Ray driver has to
join the server's cluster.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml
from serving_harness import Server, start_server, stop_server

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RESTART_TIMEOUT_S = 120.0


def _unix_sockets() -> list[tuple[str, str, str]]:
    """(state, inode, path) of every bound Unix socket; state '01' listening, '03' connected."""
    out = []
    with open("/proc/net/unix") as fh:
        next(fh)
        for line in fh:
            parts = line.split()
            if len(parts) >= 8:
                out.append((parts[5], parts[6], parts[7]))
    return out


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in glob.glob(f"/proc/{pid}/fd/*"):
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _live_sockets(app: str) -> dict[str, bool]:
    """Socket path of each live replica of ``app`` -> whether an ingress is connected to it."""
    entries = _unix_sockets()
    connected = {p for st, _, p in entries if st == "03"}
    out = {}
    for pid in _replica_pids(app):
        inodes = _socket_inodes(pid)
        for st, inode, path in entries:
            if st == "01" and inode in inodes and path.endswith("/replica.sock"):
                out[path] = path in connected
    return out


def _replica_pids(app: str) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-f", f"ServeReplica:{app}:ModelVersion"], capture_output=True, text=True
    ).stdout
    return [int(pid) for pid in found.split()]


def _digits_request(client: httpclient.InferenceServerClient, n: int = 4) -> np.ndarray:
    x = np.random.default_rng(n).random((n, 1, 8, 8), dtype=np.float32)
    inp = httpclient.InferInput("pixels", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return client.infer("digits", [inp]).as_numpy("logits")


def _digits_only_server(model_repository: Path, tmp_path: Path, **settings: object) -> Server:
    """A server of its own (its own Ray) on a copy of just the digits model."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(model_repository / "digits", repo / "digits")
    config = tmp_path / "serve.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "applications": [
                    {
                        "name": settings.get("app_prefix", "rayfront"),
                        "import_path": "rayfront.deploy.app:build_gateway",
                        "args": {"repository": str(repo), **settings},
                    }
                ]
            }
        )
    )
    return start_server(repo, tmp_path / "serve.log", "--config", str(config))


def _wait_for(what: str, check, timeout_s: float, server: Server | None = None):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.25)
    tail = f"\n{server.log_tail()}" if server is not None else ""
    raise AssertionError(f"{what} not reached in {timeout_s:.0f}s (last: {last!r}){tail}")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_transport_answers_match_onnxruntime_when_ingress_uses_replica_socket(
    server, ort_sessions, protocol
):
    mod = httpclient if protocol == "http" else grpcclient
    client = mod.InferenceServerClient(server.http_url if protocol == "http" else server.grpc_url)
    feats = np.random.default_rng(5).standard_normal((5, 4)).astype(np.float32)
    ids = np.random.default_rng(6).integers(0, 16, size=(5, 5)).astype(np.int64)
    a = mod.InferInput("features", [5, 4], "FP32")
    a.set_data_from_numpy(feats)
    b = mod.InferInput("ids", [5, 5], "INT64")
    b.set_data_from_numpy(ids)
    result = client.infer("multi", [a, b])
    ref_scores, ref_nonzero = ort_sessions["multi"].run(
        ["scores", "nonzero"], {"features": feats, "ids": ids}
    )
    np.testing.assert_allclose(result.as_numpy("scores"), ref_scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(result.as_numpy("nonzero"), ref_nonzero)
    # The request went over the replica's socket, in a private directory, not a Serve
    # handle call.
    sockets = _live_sockets("rayfront--multi--v1")
    assert sockets, "no live transport socket for rayfront--multi--v1"
    assert any(sockets.values()), f"ingress is not connected to any of {sorted(sockets)}"
    for path in sockets:
        assert os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700


def test_requests_succeed_again_when_replica_is_sigkilled_and_restarted(
    model_repository, ort_sessions, tmp_path
):
    app = "rffast--digits--v1"
    server = _digits_only_server(model_repository, tmp_path, app_prefix="rffast")
    try:
        client = httpclient.InferenceServerClient(server.http_url, network_timeout=30)
        expected = _digits_request(client)
        (old_pid,) = _wait_for("one replica process", lambda: _replica_pids(app), 30, server)
        (old_socket,) = _wait_for("a connected socket", lambda: _live_sockets(app), 30, server)

        os.kill(old_pid, signal.SIGKILL)

        def replaced() -> list[int]:
            pids = _replica_pids(app)
            return [p for p in pids if p != old_pid]

        (new_pid,) = _wait_for("a restarted replica", replaced, RESTART_TIMEOUT_S, server)

        def serving() -> bool:
            try:
                return all(
                    np.allclose(_digits_request(client), expected, atol=1e-5) for _ in range(3)
                )
            except Exception:  # 503 while Serve reports the version unhealthy
                return False

        _wait_for("successful requests after the restart", serving, RESTART_TIMEOUT_S, server)

        # The ingress found the new replica's endpoint (not just the handle fallback).
        def reconnected() -> list[str]:
            _digits_request(client)
            return [p for p, up in _live_sockets(app).items() if up and p != old_socket]

        _wait_for("a transport connection to the new replica", reconnected, 30, server)
        assert new_pid != old_pid
        assert server.proc.poll() is None
    finally:
        stop_server(server)
