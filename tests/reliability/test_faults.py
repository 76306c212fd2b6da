"""Faults under load: kill or hang a part of the server while 16 clients keep sending.

Each scenario runs its own server on a copy of the digits model, drives a bounded load
(:class:`load_run.LoadRun`), injects one fault a few seconds in, and then requires:

* ``hung == 0`` and ``wrong == 0``: no request waits forever, none gets another's answer;
* the server serves correctly again before the run ends.

The figures (sent / ok / refused / hung / wrong, and how long errors lasted) are printed
(``pytest -s``) for the README's fault table.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import yaml
from hostile import assert_still_right
from load_run import LoadRun
from serving_harness import Server, descendants, start_server, stop_server

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(400)]

FAULT_AT_S = 4.0
RUN_S = 16.0


def _server(model_repository: Path, tmp_path: Path, **settings: object) -> Server:
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(model_repository / "digits", repo / "digits")
    config = tmp_path / "serve.yaml"
    app = {
        "name": "rayfront",
        "import_path": "rayfront.deploy.app:build_gateway",
        "args": {"repository": str(repo), **settings},
    }
    config.write_text(yaml.safe_dump({"applications": [app]}))
    return start_server(repo, tmp_path / "serve.log", "--config", str(config))


def _pids(server: Server, pattern: str) -> list[int]:
    """This server's processes whose command line contains ``pattern`` (another server,
    such as the suite's shared one, may run replicas of the same name)."""
    found = []
    for pid in sorted(descendants(server.proc.pid)):
        try:
            with open(f"/proc/{pid}/cmdline") as f:
                if pattern in f.read().replace("\0", " "):
                    found.append(pid)
        except OSError:
            continue
    return found


def _wait_pids(server: Server, pattern: str, n: int, timeout_s: float = 60.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = _pids(server, pattern)
        if len(pids) >= n:
            return pids
        time.sleep(0.5)
    raise AssertionError(f"fewer than {n} processes match {pattern!r}")


REPLICA = "ServeReplica:rayfront--digits--v1:ModelVersion"
GATEWAY = "ServeReplica:rayfront:Gateway"
CONTROLLER = "ServeController"


def _run_with_fault(server: Server, session, fault, label: str, run_s: float = RUN_S) -> dict:
    load = LoadRun(server.http_url, session, concurrency=16, duration_s=run_s).start()
    time.sleep(FAULT_AT_S)
    fault()
    report = load.join()
    summary = report.summary()
    recovered = report.ok_after(run_s - 4.0)
    print(f"\nfault {label}: {summary}; ok in the last 4 s: {recovered}")
    assert summary["hung"] == 0, summary
    assert summary["wrong"] == 0, summary
    assert recovered > 0 and report.not_ok_after(run_s - 4.0) == 0, (
        f"not serving cleanly again by the end: {summary}\n{server.log_tail(30)}"
    )
    return summary


def test_killed_model_replica_loses_no_request(model_repository, ort_sessions, tmp_path):
    server = _server(model_repository, tmp_path)
    try:
        (pid,) = _wait_pids(server, REPLICA, 1)
        _run_with_fault(
            server, ort_sessions["digits"], lambda: os.kill(pid, signal.SIGKILL), "kill replica"
        )
        assert_still_right(server, ort_sessions["digits"])
    finally:
        stop_server(server)


def test_killed_ingress_process_clients_reach_its_sibling(model_repository, ort_sessions, tmp_path):
    server = _server(model_repository, tmp_path, gateway_replicas=2)
    try:
        pids = _wait_pids(server, GATEWAY, 2)
        summary = _run_with_fault(
            server,
            ort_sessions["digits"],
            lambda: os.kill(pids[0], signal.SIGKILL),
            "kill one of two ingress processes",
        )
        # Only connections that were on the killed process fail, and only for a moment.
        assert summary["refused_window_s"] < 5.0, summary
        assert_still_right(server, ort_sessions["digits"])
    finally:
        stop_server(server)


def test_killed_controller_leaves_data_plane_serving(model_repository, ort_sessions, tmp_path):
    server = _server(model_repository, tmp_path)
    try:
        gateways = _wait_pids(server, GATEWAY, 1)
        (controller,) = _wait_pids(server, CONTROLLER, 1)
        summary = _run_with_fault(
            server,
            ort_sessions["digits"],
            lambda: os.kill(controller, signal.SIGKILL),
            "kill the Serve controller",
        )
        # Requests never pass through the controller: nothing may fail, and the recovered
        # controller must not replace the running gateway.
        assert summary["refused"] == 0, summary
        assert _pids(server, CONTROLLER) and _pids(server, CONTROLLER) != [controller]
        assert _pids(server, GATEWAY) == gateways
        assert_still_right(server, ort_sessions["digits"])
    finally:
        stop_server(server)


def test_hung_replica_is_replaced_and_no_request_hangs(model_repository, ort_sessions, tmp_path):
    server = _server(model_repository, tmp_path)
    pid = 0
    try:
        (pid,) = _wait_pids(server, REPLICA, 1)
        # Serve's health check (every 5 s, 10 s timeout) finds it and starts a new one.
        _run_with_fault(
            server,
            ort_sessions["digits"],
            lambda: os.kill(pid, signal.SIGSTOP),
            "hang replica",
            run_s=45.0,
        )
        # Ray cannot end a stopped process gracefully, so it may linger until Serve's
        # force-kill; what matters is that a replacement serves and the hung one gets none.
        assert [p for p in _pids(server, REPLICA) if p != pid], "no replacement replica started"
        assert_still_right(server, ort_sessions["digits"])
    finally:
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        stop_server(server)
