"""Fixtures for benchmark unit tests (builders live in bench_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench_helpers import sweep_result

from rayfront.benchmarks.analysis.results import SweepResult


@pytest.fixture
def sample_result(tmp_path: Path) -> SweepResult:
    return sweep_result(tmp_path)
