"""Server subprocesses: free ports, start in their own session, poll readiness, always clean up.

Every server the sweep measures is a child process started in a new session (its own
process group), so Ctrl-C in the terminal reaches only the runner, and the runner decides
how to stop its children: SIGTERM to the group, a grace period, then SIGKILL to the group
and to every descendant recorded while it ran (Ray's workers are not always in the group).
Only processes this module started, and their descendants, are ever signalled.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import logging
import os
import random
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rayfront.errors import UnavailableError

logger = logging.getLogger(__name__)

_LIVE: set[ServerProcess] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free now, below the kernel's ephemeral range.

    The server binds it a few seconds later. An ephemeral port (what binding port 0 gives)
    can be taken meanwhile by any outgoing connection or by one of the random ports Ray's
    own processes listen on; ports under the ephemeral range are only ever taken on purpose.
    """
    low, _ = _ephemeral_range()
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(max(1024, low - 12000), low - 1)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def http_status(host: str, port: int, path: str, timeout_s: float = 2.0) -> int | None:
    """Status of ``GET path``, or None when nothing answers."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def grpc_server_ready(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """Triton ``ServerReady`` over gRPC (False when nothing answers)."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    with grpc.insecure_channel(f"{host}:{port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            return bool(stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=timeout_s).ready)
        except grpc.RpcError:
            return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


_CAUSE = re.compile(r"(error|exception|refused|denied|not found|no such|cannot|failed)", re.I)


def _cause(tail: str) -> str:
    """The last log line that looks like an error (else the last line), shortened."""
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    hits = [ln for ln in lines if _CAUSE.search(ln)]
    line = (hits or lines or ["(empty log)"])[-1]
    return line if len(line) <= 240 else line[:237] + "..."


class ServerProcess:
    """One server subprocess with its log file."""

    def __init__(self, name: str, cmd: Sequence[str], log_path: Path, env: dict[str, str]) -> None:
        self.name = name
        self.cmd = list(cmd)
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        # pid -> create_time, so a recycled pid is never mistaken for one of ours.
        self._descendants: dict[int, float] = {}

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(("$ " + " ".join(self.cmd) + "\n").encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
            )
        _LIVE.add(self)
        logger.info("started %s (pid %d): %s", self.name, self.proc.pid, " ".join(self.cmd))

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def failure(self) -> str:
        """Why the process is gone: one line with the likely cause, then the end of its log."""
        rc = None if self.proc is None else self.proc.poll()
        tail = _tail(self.log_path)
        return f"{self.name} exited with code {rc}: {_cause(tail)} (log {self.log_path})\n{tail}"

    def wait_ready(self, probe: Callable[[], bool], timeout_s: float, what: str) -> float:
        """Poll ``probe`` until it is true; return seconds waited. Raise if it dies or times out."""
        t0 = time.monotonic()
        delay = 0.1
        while True:
            self._remember_descendants()
            if not self.running:
                raise UnavailableError(f"failed to start: {self.failure()}")
            if probe():
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout_s:
                tail = _tail(self.log_path)
                raise UnavailableError(
                    f"failed to start: {self.name} not ready ({what}) after {timeout_s:.0f}s: "
                    f"{_cause(tail)} (log {self.log_path})\n{tail}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    def _remember_descendants(self) -> None:
        if self.proc is None:
            return
        try:
            import psutil  # installed with Ray; without it, the process group is the net
        except ImportError:
            return
        try:
            parent = psutil.Process(self.proc.pid)
            for child in parent.children(recursive=True):
                self._descendants.setdefault(child.pid, child.create_time())
        except psutil.Error:
            return

    def _kill_descendants(self) -> None:
        try:
            import psutil
        except ImportError:
            return
        for pid, created in self._descendants.items():
            try:
                proc = psutil.Process(pid)
                if proc.create_time() == created:
                    proc.kill()
            except psutil.Error:
                continue

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the leader (servers drain on it), wait, then SIGKILL group and descendants.

        Only the leader gets SIGTERM: a group-wide SIGTERM would also reach Ray's own GCS and
        raylet under ``rayfront serve``, leaving nothing to drain.
        """
        if self.proc is None:
            return
        t0 = time.monotonic()
        self._remember_descendants()
        pgid = self.proc.pid  # start_new_session: the child leads its own group
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "%s did not stop in %.0fs after SIGTERM; killing", self.name, grace_s
                )
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        self._kill_descendants()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        _LIVE.discard(self)
        logger.info("stopped %s in %.1f s", self.name, time.monotonic() - t0)


def clean_env(extra: dict[str, str] | None = None, drop: Sequence[str] = ()) -> dict[str, str]:
    """This process's environment without ``drop`` (e.g. RAY_ADDRESS), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in set(drop)}
    env.update(extra or {})
    return env


@atexit.register
def _stop_all() -> None:
    # A last resort if the runner dies without its finally blocks (e.g. SystemExit in a thread).
    for server in list(_LIVE):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            server.stop(grace_s=5)
