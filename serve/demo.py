"""The README's first command: export the demo models, serve them, send real requests.

The server runs as a child ``rayfront serve`` process, exactly as a user would start it;
the requests go through unmodified ``tritonclient`` (HTTP for digits, gRPC for MiniLM).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from rayfront.errors import RayfrontError, UnavailableError

RepositoryOption = Annotated[
    Path,
    typer.Option("--repository", "-r", help="Triton model repository to serve."),
]

console = Console()
READY_TIMEOUT_S = 240.0

SENTENCES = [
    "A man is playing a guitar.",
    "Someone is playing an instrument.",
    "The stock market fell sharply today.",
    "Shares dropped on Wall Street.",
]


def start_server(
    repository: Path, http_port: int, grpc_port: int, *, extra: list[str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``rayfront serve`` in its own process group (so Ctrl-C handling stays ours)."""
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
        *(extra or []),
    ]
    return subprocess.Popen(cmd, start_new_session=True)


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll the server's readiness; fail fast if the process died."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UnavailableError(
                f"rayfront serve exited with code {proc.returncode} before ready"
            )
        try:
            if client.is_server_ready():
                return
        except Exception:  # connection refused while Ray starts
            pass
        time.sleep(0.5)
    raise UnavailableError(f"rayfront serve at {url} not ready after {timeout_s:.0f}s")


def stop_server(proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    """SIGTERM to the server (graceful drain), then SIGKILL its group if it hangs."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def digits_requests(url: str) -> float:
    """Classify held-out digits over HTTP (binary tensors); print a table; return accuracy."""
    import tritonclient.http as httpclient

    from rayfront.export.demos.digits import load_data

    data = load_data()
    images, labels = data.x_test.astype(np.float32), data.y_test
    client = httpclient.InferenceServerClient(url, concurrency=4)
    # One request per image, sent concurrently: the server's dynamic batcher groups them.
    pending = []
    for image in images:
        inp = httpclient.InferInput("pixels", [1, *image.shape], "FP32")
        inp.set_data_from_numpy(image[None], binary_data=True)
        pending.append(
            client.async_infer("digits", [inp], outputs=[httpclient.InferRequestedOutput("logits")])
        )
    predictions = np.array([p.get_result().as_numpy("logits")[0].argmax() for p in pending])
    accuracy = float((predictions == labels).mean())
    table = Table(title=f"digits over HTTP: {len(labels)} held-out images, accuracy {accuracy:.1%}")
    table.add_column("image")
    table.add_column("label")
    table.add_column("prediction")
    for i in range(min(10, len(labels))):
        ok = "[green]" if predictions[i] == labels[i] else "[red]"
        table.add_row(str(i), str(labels[i]), f"{ok}{predictions[i]}")
    console.print(table)
    return accuracy


def minilm_requests(grpc_url: str) -> np.ndarray:
    """Embed sentences over gRPC; print their cosine similarities."""
    import tritonclient.grpc as grpcclient

    from rayfront.export.demos.minilm import tokenize

    tokens = tokenize(SENTENCES)
    client = grpcclient.InferenceServerClient(grpc_url)
    inputs = []
    for name, arr in tokens.items():
        inp = grpcclient.InferInput(name, list(arr.shape), "INT64")
        inp.set_data_from_numpy(arr.astype(np.int64))
        inputs.append(inp)
    result = client.infer("minilm", inputs)
    emb = result.as_numpy("embedding")
    sims = emb @ emb.T
    table = Table(title="MiniLM over gRPC: cosine similarity")
    table.add_column("")
    for j in range(len(SENTENCES)):
        table.add_column(str(j))
    for i, s in enumerate(SENTENCES):
        table.add_row(f"{i}: {s}", *(f"{sims[i, j]:.2f}" for j in range(len(SENTENCES))))
    console.print(table)
    return sims


def run_demo(repository: Path, *, http_port: int, grpc_port: int, keep_serving: bool) -> None:
    """Export (skipping models already there), serve, request, stop."""
    from rayfront.export.demos import export_demo_models

    repository = repository.resolve()
    console.rule("1/3 export the demo models")
    for path in export_demo_models(repository):
        console.print(f"exported {path}")
    console.rule("2/3 start rayfront serve")
    proc = start_server(repository, http_port, grpc_port)
    try:
        wait_ready(f"127.0.0.1:{http_port}", proc)
        console.rule("3/3 send real requests with tritonclient")
        accuracy = digits_requests(f"127.0.0.1:{http_port}")
        minilm_requests(f"127.0.0.1:{grpc_port}")
        if accuracy < 0.9:
            raise RayfrontError(
                f"digits accuracy {accuracy:.1%} is below 90%: the served model is wrong"
            )
        if keep_serving:
            console.print("server keeps running; Ctrl-C stops it")
            proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop_server(proc)


def demo_command(
    repository: RepositoryOption = Path("model_repository"),
    http_port: Annotated[int, typer.Option(help="HTTP port for the demo server.")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="gRPC port for the demo server.")] = 8001,
    keep_serving: Annotated[
        bool, typer.Option(help="Leave the server running after the requests (Ctrl-C stops).")
    ] = False,
) -> None:
    """Export the demo models (digits CNN, MiniLM encoder), serve them, send real requests."""
    try:
        run_demo(repository, http_port=http_port, grpc_port=grpc_port, keep_serving=keep_serving)
    except RayfrontError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
