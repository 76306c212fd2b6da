"""Fixtures for the canary unit tests: a tiny repository, a fake fleet and a fake clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from rayfront.canary.controller import CanaryManager
from rayfront.canary.store import CanaryStore

MODEL = "digits"

SIG = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 3]}],
}
# Version 3 changed its output dtype: a canary that must be refused.
SIG_V3 = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "logits", "datatype": "FP16", "shape": [-1, 3]}],
}


class FakeClock:
    """Seconds since the epoch, moved only by the test."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@dataclass
class FakeFleet:
    """What the gateway would report: live versions, health, signatures; retirements seen."""

    live: dict[str, list[str]] = field(default_factory=lambda: {MODEL: ["1", "2", "3"]})
    unhealthy: set[tuple[str, str]] = field(default_factory=set)
    retired: list[tuple[str, str, float]] = field(default_factory=list)

    def live_versions(self, model: str) -> list[str]:
        return list(self.live.get(model, []))

    def version_healthy(self, model: str, version: str) -> bool:
        return (model, version) not in self.unhealthy

    def signature_of(self, model: str, version: str) -> Any:
        return SIG_V3 if version == "3" else SIG

    def on_retire(self, model: str, version: str, after_s: float) -> None:
        self.retired.append((model, version, after_s))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "model_repository"
    model_dir = root / MODEL
    for v in ("1", "2", "3"):
        (model_dir / v).mkdir(parents=True)
        (model_dir / v / "model.onnx").write_bytes(b"onnx")
    (model_dir / "config.pbtxt").write_text('name: "digits"\nplatform: "onnxruntime_onnx"\n')
    return root


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fleet() -> FakeFleet:
    return FakeFleet()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def make_manager(
    repo: Path, fleet: FakeFleet, clock: FakeClock, registry: CollectorRegistry
) -> Callable[..., CanaryManager]:
    def make(**kwargs: Any) -> CanaryManager:
        return CanaryManager(
            CanaryStore(repo),
            signature_of=fleet.signature_of,
            live_versions=fleet.live_versions,
            version_healthy=fleet.version_healthy,
            clock=clock,
            on_retire=fleet.on_retire,
            registry=kwargs.pop("registry", registry),
            **kwargs,
        )

    return make
