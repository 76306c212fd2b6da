"""GPU gauges from NVML, in Triton's names, for the GPUs a model replica can see.

==============================  =========================================================
``nv_gpu_utilization``          busy fraction (0..1) of the last sample period, per GPU
``nv_gpu_memory_used_bytes``    device memory in use
``nv_gpu_memory_total_bytes``   device memory
``nv_gpu_power_usage``          watts
==============================  =========================================================

Each sample is labelled ``gpu_uuid`` (as Triton does) and ``gpu`` (the index this process
sees). Replicas that share a GPU each report it, with their own ``rayfront_process`` label
on the merged /metrics, so aggregate with ``max by (gpu_uuid)``, not ``sum``.

NVML comes from ``nvidia-ml-py`` (the ``gpu`` extra), imported only by :func:`gpu_collector`;
on a host without it, or without a GPU, there is no collector and nothing is exported.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)


class NvmlCollector(Collector):
    """Reads every visible GPU at scrape time (a handful of NVML calls, microseconds)."""

    def __init__(self, nvml: Any, handles: list[Any]) -> None:
        self._nvml = nvml
        self._handles = handles
        self._uuids = [_text(nvml.nvmlDeviceGetUUID(h)) for h in handles]

    def collect(self) -> Iterator[Metric]:
        nvml = self._nvml
        util = Metric("nv_gpu_utilization", "GPU utilization rate [0.0 - 1.0)", "gauge")
        used = Metric("nv_gpu_memory_used_bytes", "GPU used memory, in bytes", "gauge")
        total = Metric("nv_gpu_memory_total_bytes", "GPU total memory, in bytes", "gauge")
        power = Metric("nv_gpu_power_usage", "GPU power usage in watts", "gauge")
        for index, (handle, uuid) in enumerate(zip(self._handles, self._uuids, strict=True)):
            labels = {"gpu_uuid": uuid, "gpu": str(index)}
            try:
                rates = nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                watts = nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
            except nvml.NVMLError as exc:  # a GPU fallen off the bus: skip it, keep the rest
                logger.warning("NVML cannot read GPU %s: %s", uuid, exc)
                continue
            util.add_sample(util.name, labels, rates.gpu / 100.0)
            used.add_sample(used.name, labels, float(memory.used))
            total.add_sample(total.name, labels, float(memory.total))
            power.add_sample(power.name, labels, watts)
        yield from (util, used, total, power)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def gpu_collector() -> NvmlCollector | None:
    """A collector over the GPUs NVML sees, or None without NVML or GPUs."""
    try:
        import pynvml as nvml
    except ImportError:
        return None
    try:
        nvml.nvmlInit()
        count = nvml.nvmlDeviceGetCount()
        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
    except nvml.NVMLError as exc:
        logger.info("no GPU metrics: NVML is not usable here (%s)", exc)
        return None
    if not handles:
        return None
    return NvmlCollector(nvml, handles)
