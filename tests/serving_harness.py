"""Helpers to build a test repository and run a real ``rayfront serve`` process.

The repository holds the real demo models (digits CNN trained on scikit-learn's digits,
MiniLM from its wheel) plus the two-input mixed-dtype model, exported once per session
through the real export pipeline. The server is the real CLI in a child process, so the
tests see exactly what a user sees: Ray Serve, ONNX Runtime and tritonclient, no mocks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ADMIN_TOKEN = "integration-secret"
READY_TIMEOUT_S = 180.0


def free_port() -> int:
    """A free port below the ephemeral range (Ray's processes take ephemeral ones)."""
    from rayfront.benchmarks.run.procs import free_port as below_ephemeral

    return below_ephemeral("127.0.0.1")


@dataclass
class Server:
    """A running ``rayfront serve`` child process."""

    proc: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    log: Path
    repository: Path

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def export_into(
    root: Path,
    ref: str,
    name: str,
    inputs: tuple[str, ...],
    outputs: tuple[str, ...],
    max_batch_size: int,
    **extra: object,
) -> Path:
    from rayfront.export.pipeline import export_model
    from rayfront.export.request import ExportRequest

    request = ExportRequest(
        model_ref=ref,
        name=name,
        inputs=inputs,
        outputs=outputs,
        max_batch_size=max_batch_size,
        repository=root,
        progress=False,
        **extra,
    )
    return export_model(request).version_dir


def write_fragile_model(root: Path, name: str = "fragile") -> None:
    """A real ONNX graph that fails inside ONNX Runtime unless batch*2 is divisible by 3.

    Reshape x[b,2] -> [-1,3] -> [-1,2]: the identity for b = 3, 6, ..., a runtime failure
    otherwise. It stands for "a model that errors on some inputs" (500, not 400).
    """
    import datetime
    import tempfile

    import onnx
    import onnx.helper as oh
    from onnx import TensorProto

    from rayfront.repository.sidecar import Provenance
    from rayfront.repository.writer import write_version
    from rayfront.spec import ModelSpec, TensorSpec

    x = oh.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 2])
    y = oh.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 2])
    nodes = [
        oh.make_node(
            "Constant", [], ["s1"], value=oh.make_tensor("s1", TensorProto.INT64, [2], [-1, 3])
        ),
        oh.make_node("Reshape", ["x", "s1"], ["r"]),
        oh.make_node(
            "Constant", [], ["s2"], value=oh.make_tensor("s2", TensorProto.INT64, [2], [-1, 2])
        ),
        oh.make_node("Reshape", ["r", "s2"], ["y"]),
    ]
    model = oh.make_model(
        oh.make_graph(nodes, name, [x], [y]), opset_imports=[oh.make_opsetid("", 17)]
    )
    model.ir_version = 9
    spec = ModelSpec(
        name=name,
        platform="onnxruntime_onnx",
        max_batch_size=8,
        inputs=(TensorSpec(name="x", datatype="FP32", dims=(2,)),),
        outputs=(TensorSpec(name="y", datatype="FP32", dims=(2,)),),
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save(model, path)
        prov = Provenance(
            source="tests/integration/conftest.py:write_fragile_model",
            created_at=datetime.datetime.now(datetime.UTC),
            exporter="external",
            exporter_note="built directly with onnx.helper",
        )
        write_version(root, spec, {"model.onnx": path}, prov)


def copy_with_queue_limit(root: Path, source: str, name: str, max_queue_size: int) -> None:
    """A copy of ``source`` whose queue holds at most ``max_queue_size`` requests."""
    import shutil

    from rayfront.repository.pbtxt import read_config, render_config

    spec = read_config(root / source)
    shutil.copytree(root / source, root / name)
    batching = spec.dynamic_batching
    assert batching is not None
    policy = batching.default_queue_policy.model_copy(update={"max_queue_size": max_queue_size})
    spec = spec.model_copy(
        update={
            "name": name,
            "dynamic_batching": batching.model_copy(update={"default_queue_policy": policy}),
        }
    )
    (root / name / "config.pbtxt").write_text(render_config(spec))


def start_server(
    repository: Path, log: Path, *extra: str, env: dict[str, str] | None = None
) -> Server:
    http_port, grpc_port = free_port(), free_port()
    cmd = [
        sys.executable,
        "-m",
        "rayfront",
        "serve",
        "--repository",
        str(repository),
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
        *extra,
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    server = Server(proc, http_port, grpc_port, log, repository)
    wait_ready(server)
    return server


def wait_ready(server: Server, timeout_s: float = READY_TIMEOUT_S) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.http_url)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"rayfront serve exited early:\n{server.log_tail()}")
        try:
            if client.is_server_ready():
                return
        except Exception:
            pass
        time.sleep(0.5)
    stop_server(server)
    raise RuntimeError(f"rayfront serve not ready after {timeout_s}s:\n{server.log_tail()}")


def stop_server(server: Server, timeout_s: float = 90.0) -> int:
    """SIGTERM to the server process (as Kubernetes and Docker do), SIGKILL the group if stuck."""
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait()
    return server.proc.returncode


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``, whatever process group it is in."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found
