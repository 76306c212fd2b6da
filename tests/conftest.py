"""Suite-wide pytest setup.

Hardware markers skip themselves without the hardware. The serving fixtures (a real model
repository, exported once per session, and a shared ``rayfront serve``) are here so the
integration and reliability suites share one export and one server.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest
from serving_harness import (
    ADMIN_TOKEN,
    Server,
    copy_with_queue_limit,
    export_into,
    start_server,
    stop_server,
    write_fragile_model,
)


@functools.cache
def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@functools.cache
def _tensorrt_available() -> bool:
    return importlib.util.find_spec("tensorrt") is not None and _cuda_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is false)")
    skip_trt = pytest.mark.skip(reason="needs the tensorrt package and a CUDA GPU")
    for item in items:
        if "tensorrt" in item.keywords and not _tensorrt_available():
            item.add_marker(skip_trt)
        elif "gpu" in item.keywords and not _cuda_available():
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """digits, minilm (the demo models), multi (two inputs, two outputs, mixed dtypes),
    fragile (fails at run time for some batch sizes) and minilm_q (a 2-request queue)."""
    from rayfront.export.demos import MULTI_REF, export_demo_models, multi

    root = tmp_path_factory.mktemp("serving") / "model_repository"
    export_demo_models(root)
    export_into(root, MULTI_REF, "multi", multi.INPUTS, multi.OUTPUTS, 8)
    write_fragile_model(root)
    copy_with_queue_limit(root, "minilm", "minilm_q", 2)
    return root


@pytest.fixture(scope="session")
def server(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One shared server with admin enabled and a 1 MiB body cap (to test the cap cheaply).

    The token comes from a file, as a mounted secret would: every admin test also checks
    that the gateway reads it.
    """
    logs = tmp_path_factory.mktemp("logs")
    token = logs / "admin-token"
    token.write_text(ADMIN_TOKEN + "\n")
    token.chmod(0o600)
    srv = start_server(
        model_repository,
        logs / "serve.log",
        "--admin-token-file",
        str(token),
        "--max-body-mb",
        "1",
        # Tracing on, as production runs it: only callers' sampled traceparents are traced.
        "--trace-file",
        str(logs / "traces.jsonl"),
        "--trace-sample-ratio",
        "0",
    )
    yield srv
    stop_server(srv)


@pytest.fixture(scope="session")
def admin_token() -> str:
    return ADMIN_TOKEN


@pytest.fixture(scope="session")
def ort_sessions(model_repository: Path) -> dict[str, object]:
    """ONNX Runtime sessions on the served files: the reference every answer must match."""
    import onnxruntime as ort

    return {
        name: ort.InferenceSession(
            str(model_repository / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
        )
        for name in ("digits", "minilm", "multi")
    }
