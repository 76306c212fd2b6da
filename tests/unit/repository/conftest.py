"""Fixtures for repository tests (builders live in repo_helpers)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from repo_helpers import make_onnx


@pytest.fixture
def onnx_file(tmp_path: Path) -> Callable[..., Path]:
    """Factory: write a tiny ONNX graph under tmp_path/src/ and return its path."""
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    counter = iter(range(10_000))

    def build(**kwargs: object) -> Path:
        return make_onnx(src / f"g{next(counter)}.onnx", **kwargs)  # type: ignore[arg-type]

    return build


@pytest.fixture
def repo_root(tmp_path: Path) -> Path:
    """Path of a model repository that does not exist yet, in its own parent folder."""
    parent = tmp_path / "repos"
    parent.mkdir()
    return parent / "model_repository"
