"""The README's first command, end to end: export the demo models, serve, real requests."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_exports_serves_and_classifies_digits_when_run_on_empty_repository(tmp_path: Path):
    repo = tmp_path / "model_repository"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rayfront",
            "demo",
            "--repository",
            str(repo),
            "--http-port",
            str(_free_port()),
            "--grpc-port",
            str(_free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert (repo / "digits" / "1" / "model.onnx").is_file()
    assert (repo / "minilm" / "1" / "model.onnx").is_file()
    accuracy = float(re.search(r"accuracy (\d+\.\d)%", out).group(1))
    assert accuracy >= 90.0, out[-4000:]
    assert "MiniLM over gRPC" in out
    assert "rayfront stopped." in out
