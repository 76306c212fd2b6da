"""Security: nobody gets in where they don't belong.

* Every admin route (listed from the production router, so a new one is covered the day
  it is added) refuses a missing, wrong or empty token over HTTP, and the gRPC admin
  calls do the same; the refusal changes nothing.
* With no token configured (the default) the admin API is off, whatever a client sends.
* Everything rayfront itself listens on (HTTP, gRPC, the replicas' transport) is bound
  to 127.0.0.1 by default, and Ray's dashboard is not started.

Ray's own GCS and raylet ports are Ray's business and are not checked here (see the
README's security notes).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import yaml
from hostile import GRPC_OPTIONS, http_call
from serving_harness import descendants, start_server, stop_server
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from rayfront.canary.api import canary_routes
from rayfront.protocol.http_app import build_http_app

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _admin_routes() -> list[tuple[str, str]]:
    app = build_http_app(None, extra_routes=canary_routes(None))  # type: ignore[arg-type]
    routes = [(r.method, str(r.pattern)) for r in app.router.routes() if r.admin]
    assert len(routes) >= 9, routes  # load, unload and the seven canary changes at least
    return sorted(routes)


def _path(pattern: str, model: str = "digits") -> str:
    return pattern.replace("{model}", model)


BAD_TOKENS = {
    "no token": {},
    "wrong token": {"Authorization": "Bearer not-the-token"},
    "empty bearer": {"Authorization": "Bearer "},
    "empty custom header": {"x-rayfront-admin-token": ""},
    "token as prefix": {"x-rayfront-admin-token": "integration"},
}


def _index(url: str) -> bytes:
    return http_call(url, "POST", "/v2/repository/index", b"{}").body


@pytest.mark.parametrize("method, pattern", _admin_routes())
def test_every_admin_route_refuses_without_the_token_and_changes_nothing(server, method, pattern):
    before = _index(server.http_url)
    canary_before = http_call(server.http_url, "GET", "/v2/rayfront/canary/digits").body
    for label, headers in BAD_TOKENS.items():
        answer = http_call(server.http_url, method, _path(pattern), b"{}", headers)
        assert answer.status == 403, (label, answer.status, answer.body)
        assert "admin" in answer.error and "Traceback" not in answer.error, answer.error
    assert _index(server.http_url) == before
    assert http_call(server.http_url, "GET", "/v2/rayfront/canary/digits").body == canary_before


@pytest.mark.parametrize("call", ["RepositoryModelLoad", "RepositoryModelUnload"])
def test_grpc_admin_calls_refuse_without_the_token(server, call):
    request = (
        pb.RepositoryModelLoadRequest(model_name="digits")
        if call == "RepositoryModelLoad"
        else pb.RepositoryModelUnloadRequest(model_name="digits")
    )
    with grpc.insecure_channel(server.grpc_url, options=GRPC_OPTIONS) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for label, headers in BAD_TOKENS.items():
            metadata = [(k.lower(), v) for k, v in headers.items()]
            with pytest.raises(grpc.RpcError) as info:
                getattr(stub, call)(request, metadata=metadata, timeout=20)
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED, label
            assert "admin" in info.value.details()
    assert "digits" in _index(server.http_url).decode()


def _listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of the TCP sockets ``pid`` listens on."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        if m:
            inodes.add(m.group(1))
    found = set()
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            next(f)
            for line in f:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state != "0A" or inode not in inodes:  # 0A: LISTEN
                    continue
                addr_hex, port_hex = local.split(":")
                if table == "tcp":
                    addr = ".".join(str(int(addr_hex[i : i + 2], 16)) for i in (6, 4, 2, 0))
                elif addr_hex == "0" * 24 + "01000000":
                    addr = "::1"
                elif addr_hex == "0000000000000000FFFF00000100007F":
                    addr = "::ffff:127.0.0.1"  # 127.0.0.1 on a dual-stack socket
                else:
                    addr = addr_hex
                found.add((addr, int(port_hex, 16)))
    return found


def _ray_workers(server_pid: int) -> dict[int, str]:
    """This server's Ray worker processes and their titles (``ray::ServeReplica:...``)."""
    found = {}
    for pid in descendants(server_pid):
        try:
            with open(f"/proc/{pid}/cmdline") as f:
                title = f.read().replace("\0", " ").strip()
        except OSError:
            continue
        if title.startswith("ray::"):
            found[pid] = title
    return found


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline") as f:
            return f.read().replace("\0", " ")
    except OSError:
        return ""


def _beyond_loopback(pid: int) -> list[tuple[str, int]]:
    return sorted(s for s in _listening(pid) if s[0] not in LOOPBACK)


LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def test_default_server_has_admin_off_and_listens_on_loopback_only(model_repository, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(model_repository / "digits", repo / "digits")
    env = {k: v for k, v in os.environ.items() if k != "RAYFRONT_ADMIN_TOKEN"}
    server = start_server(repo, tmp_path / "serve.log", env=env)
    try:
        # Admin off: even a well-formed token opens nothing.
        for method, pattern in _admin_routes():
            answer = http_call(
                server.http_url, method, _path(pattern), b"{}", {"Authorization": "Bearer x"}
            )
            assert answer.status == 403 and "disabled" in answer.error, (pattern, answer.error)
        with grpc.insecure_channel(server.grpc_url) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.RepositoryModelUnload(
                    pb.RepositoryModelUnloadRequest(model_name="digits"),
                    metadata=[("authorization", "Bearer x")],
                    timeout=20,
                )
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "disabled" in info.value.details()

        # Loopback only. Every Ray worker runs Ray's core-worker gRPC server on all
        # interfaces, and every Serve replica adds Serve's inter-deployment gRPC server
        # (replica.py binds "[::]:0"); neither is configurable in Ray 2.60. The Serve
        # controller, a worker without rayfront code, shows the first; ours may add
        # nothing beyond those two.
        workers = _ray_workers(server.proc.pid)
        ours = {p: t for p, t in workers.items() if "ServeReplica:rayfront" in t}
        (controller,) = [p for p, t in workers.items() if "ServeController" in t]
        assert any("Gateway" in t for t in ours.values()), workers
        assert any("ModelVersion" in t for t in ours.values()), workers
        ports = {port for pid in ours for _, port in _listening(pid)}
        assert {server.http_port, server.grpc_port} <= ports, ports
        ray_own = len(_beyond_loopback(controller)) + 1
        exposed = {
            ours[pid]: _beyond_loopback(pid) for pid in ours if len(_beyond_loopback(pid)) > ray_own
        }
        assert not exposed, f"rayfront listens beyond loopback (Ray's own: {ray_own}): {exposed}"

        # Ray still starts its dashboard head with include_dashboard=False, but with no
        # frontend and only the usage-stats module: no job submission, no state API. Its
        # one wider port is Ray's read-only Prometheus exporter (DASHBOARD_METRIC_PORT,
        # bound by Ray on all interfaces; see the README's security notes).
        from ray.dashboard.consts import DASHBOARD_METRIC_PORT

        heads = [p for p in descendants(server.proc.pid) if "dashboard.py" in _cmdline(p)]
        for pid in heads:
            title = _cmdline(pid)
            assert "--modules-to-load=UsageStatsHead" in title, title
            assert "--disable-frontend" in title, title
            wider = [s for s in _beyond_loopback(pid) if s[1] != DASHBOARD_METRIC_PORT]
            assert not wider, _listening(pid)
    finally:
        stop_server(server)


def test_print_config_keeps_the_bind_address_and_no_secret(model_repository, tmp_path: Path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "rayfront",
            "serve",
            "-r",
            str(model_repository),
            "--admin-token",
            "hush",
            "--print-config",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    args = yaml.safe_load(out)["applications"][-1]["args"]
    assert args["host"] == "127.0.0.1"
    assert "hush" not in out
