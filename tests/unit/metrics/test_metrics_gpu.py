"""NVML gauges against a stand-in NVML module (the real one needs an NVIDIA driver)."""

from __future__ import annotations

import sys
import types
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from rayfront.gpu_metrics import gpu_collector


class FakeNvmlError(Exception):
    pass


def _fake_nvml(count: int, *, broken: int | None = None, init_fails: bool = False):
    mod = types.ModuleType("pynvml")
    mod.NVMLError = FakeNvmlError

    def init() -> None:
        if init_fails:
            raise FakeNvmlError("Driver Not Loaded")

    def rates(handle: int) -> SimpleNamespace:
        if handle == broken:
            raise FakeNvmlError("GPU is lost")
        return SimpleNamespace(gpu=40 + handle, memory=10)

    mod.nvmlInit = init
    mod.nvmlDeviceGetCount = lambda: count
    mod.nvmlDeviceGetHandleByIndex = lambda i: i
    mod.nvmlDeviceGetUUID = lambda h: f"GPU-{h:04d}".encode()
    mod.nvmlDeviceGetUtilizationRates = rates
    mod.nvmlDeviceGetMemoryInfo = lambda h: SimpleNamespace(used=(h + 1) * 2**30, total=80 * 2**30)
    mod.nvmlDeviceGetPowerUsage = lambda h: 350_500
    return mod


def _scrape(collector) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def test_gpu_collector_exports_triton_gauges_per_gpu_when_nvml_sees_gpus(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(2))
    text = _scrape(gpu_collector())
    assert 'nv_gpu_utilization{gpu="0",gpu_uuid="GPU-0000"} 0.4' in text
    assert 'nv_gpu_utilization{gpu="1",gpu_uuid="GPU-0001"} 0.41' in text
    assert 'nv_gpu_memory_used_bytes{gpu="1",gpu_uuid="GPU-0001"} 2.147483648e+09' in text
    assert 'nv_gpu_memory_total_bytes{gpu="0",gpu_uuid="GPU-0000"} 8.589934592e+10' in text
    assert 'nv_gpu_power_usage{gpu="0",gpu_uuid="GPU-0000"} 350.5' in text


def test_gpu_collector_skips_a_lost_gpu_and_keeps_the_others_when_nvml_fails_for_one(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(2, broken=0))
    text = _scrape(gpu_collector())
    assert 'gpu_uuid="GPU-0000"' not in text
    assert 'nv_gpu_utilization{gpu="1",gpu_uuid="GPU-0001"} 0.41' in text


@pytest.mark.parametrize("nvml", [None, "no-driver", "no-gpus"])
def test_gpu_collector_is_absent_when_nvml_or_gpus_are_missing(monkeypatch, nvml):
    if nvml is None:
        monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    elif nvml == "no-driver":
        monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(1, init_fails=True))
    else:
        monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(0))
    assert gpu_collector() is None
