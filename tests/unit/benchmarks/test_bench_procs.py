"""Server subprocess handling: readiness polling, failure reasons, cleanup of the whole group."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import psutil
import pytest

from rayfront.benchmarks.run.procs import ServerProcess, clean_env, free_port, http_status
from rayfront.errors import UnavailableError


def test_wait_ready_raises_with_log_cause_when_process_exits(tmp_path: Path) -> None:
    code = (
        "import sys; print('loading'); print('ValueError: bad repository', flush=True); sys.exit(3)"
    )
    server = ServerProcess("dies", [sys.executable, "-c", code], tmp_path / "dies.log", clean_env())
    server.start()
    try:
        with pytest.raises(
            UnavailableError,
            match=r"failed to start: dies exited with code 3: ValueError: bad repository",
        ):
            server.wait_ready(lambda: False, timeout_s=30, what="never")
    finally:
        server.stop()


def test_wait_ready_raises_when_probe_never_true(tmp_path: Path) -> None:
    server = ServerProcess(
        "slow",
        [sys.executable, "-c", "import time; time.sleep(60)"],
        tmp_path / "s.log",
        clean_env(),
    )
    server.start()
    try:
        with pytest.raises(UnavailableError, match=r"slow not ready \(probe\) after 0s"):
            server.wait_ready(lambda: False, timeout_s=0.3, what="probe")
    finally:
        server.stop(grace_s=2)
    assert not server.running


def test_stop_kills_descendants_when_parent_ignores_sigterm(tmp_path: Path) -> None:
    # The grandchild leaves the process group (own session), so only pid tracking finds it.
    code = (
        "import signal, subprocess, sys, time; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True); "
        "print(f'GRANDCHILD={child.pid}.', flush=True); "
        "time.sleep(60)"
    )
    log = tmp_path / "g.log"
    server = ServerProcess("stubborn", [sys.executable, "-c", code], log, clean_env())
    server.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not re.search(r"GRANDCHILD=(\d+)\.", log.read_text()):
        time.sleep(0.05)
    found = re.search(r"GRANDCHILD=(\d+)\.", log.read_text())
    assert found is not None, log.read_text()
    child_pid = int(found.group(1))
    server.stop(grace_s=0.5)
    assert not server.running
    deadline = time.monotonic() + 5
    while (
        time.monotonic() < deadline
        and psutil.pid_exists(child_pid)
        and psutil.Process(child_pid).status() != psutil.STATUS_ZOMBIE
    ):
        time.sleep(0.05)
    assert (
        not psutil.pid_exists(child_pid)
        or psutil.Process(child_pid).status() == psutil.STATUS_ZOMBIE
    )


def test_http_status_is_none_when_nothing_listens() -> None:
    assert http_status("127.0.0.1", free_port(), "/v2/health/ready", timeout_s=0.5) is None


def test_clean_env_drops_ray_address_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "ray://elsewhere:10001")
    env = clean_env({"A": "1"}, drop=("RAY_ADDRESS",))
    assert "RAY_ADDRESS" not in env and env["A"] == "1"
