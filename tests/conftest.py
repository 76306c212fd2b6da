"""Suite-wide pytest setup: hardware markers skip themselves without the hardware."""

from __future__ import annotations

import functools
import importlib.util

import pytest


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
