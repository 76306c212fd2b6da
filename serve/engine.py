"""VersionEngine: one model version, loaded and warmed up, taking requests.

It is what a ModelVersion replica runs (and what in-process use runs without Ray): the
execution instances of the model's ``instance_group``
(:mod:`rayfront.runtimes.instances`), the dynamic batcher in front of them, where the
requests of every ingress process converge, and the warm-up that runs before the
version reports ready. It also measures its own load (queue depth, queue wait, batches in
flight) for the autoscaler.

Instances follow Triton: ``count`` instances per GPU of a KIND_GPU group (on every GPU
this process was given, or the ``gpus`` listed), ``count`` threads for KIND_CPU.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from rayfront.batching import DirectExecutor, DynamicBatcher, make_executor
from rayfront.dtypes import to_numpy
from rayfront.errors import RayfrontError, RepositoryError, UnavailableError
from rayfront.metrics import InferenceRecorder, RecorderGroup
from rayfront.runtimes import load_runtime
from rayfront.runtimes._common import device_kind, param_bool
from rayfront.runtimes.base import Runtime
from rayfront.runtimes.device_pipeline import CudaBackend, DevicePipeline
from rayfront.runtimes.instances import HostInstance, Instance, InstancePool
from rayfront.spec import ModelSpec, ModelWarmup
from rayfront.tensors import TensorDict
from rayfront.tracing import StageTiming
from rayfront.transport.frames import RequestMeta

logger = logging.getLogger(__name__)

#: config.pbtxt parameter: "off" skips the default warm-up (``model_warmup`` still runs).
PARAM_WARMUP = "rayfront.warmup"
#: Batches in flight per instance by default. On a GPU a third batch is collated while one
#: computes and the next is already copied in, so the device never waits for the host.
GPU_DEPTH = 3
CPU_DEPTH = 2


class EngineSettings(BaseModel):
    """How a replica runs its model version (from the server settings)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    depth: int | None = Field(
        default=None,
        ge=1,
        le=8,
        description=(
            "Batches each execution instance keeps in flight; default 3 on a GPU (one "
            "computing, one copied in, one collated) and 2 on a CPU."
        ),
    )
    copy_threads: int = Field(
        default=0, ge=0, description="Threads collating big batches; 0 = min(4, CPUs)."
    )
    warmup: bool = Field(default=True, description="Run the warm-up before reporting ready.")


@dataclass(frozen=True, slots=True)
class InstancePlan:
    """Where a version's execution instances go."""

    kind: str  # "GPU" or "CPU"
    devices: tuple[int, ...]  # GPU indices this process sees; () on the CPU
    per_device: int

    @property
    def count(self) -> int:
        return self.per_device * max(1, len(self.devices))


def instance_plan(spec: ModelSpec, gpus_visible: int) -> InstancePlan:
    """Triton's instance groups, on the devices this process was given.

    A KIND_GPU group puts ``count`` instances on each GPU it names (``gpus``, numbered as
    this process sees them) or on every visible GPU. Several groups of one kind add up.
    """
    kind = device_kind(spec, gpu_available=gpus_visible > 0)
    groups = [g for g in spec.instance_groups if (g.kind == "KIND_GPU") == (kind == "GPU")]
    groups = groups or list(spec.instance_groups)
    per_device = sum(g.count for g in groups) if kind == "CPU" else max(g.count for g in groups)
    if kind == "CPU":
        return InstancePlan("CPU", (), max(1, per_device))
    named = sorted({i for g in groups for i in g.gpus})
    devices = tuple(named) if named else tuple(range(max(1, gpus_visible)))
    missing = [i for i in devices if i >= gpus_visible]
    if gpus_visible and missing:
        raise RepositoryError(
            f"model {spec.name!r}: instance_group names GPUs {list(named)}, but this replica "
            f"sees {gpus_visible} (numbered from 0); reserve more GPUs for it or name fewer"
        )
    return InstancePlan("GPU", devices, max(1, per_device))


class LoadMeter:
    """Time-averaged queue depth and batches in flight, and the mean queue wait, per window.

    Fed by the batcher (as a recorder) and the instance pool; read, and reset, each time the
    replica reports to the autoscaler.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        now = clock()
        self.queued = 0
        self.inflight = 0
        self._since = self._last = now
        self._queued_area = self._inflight_area = 0.0
        self._wait_sum = 0.0
        self._waits = 0
        self._peak_queued = 0

    def _advance(self) -> None:
        now = self._clock()
        dt = now - self._last
        self._queued_area += self.queued * dt
        self._inflight_area += self.inflight * dt
        self._last = now

    # -- recorder protocol (the parts the batcher calls) --------------------------------

    def set_pending(self, model: str, version: str, pending: int) -> None:
        self._advance()
        self.queued = pending
        self._peak_queued = max(self._peak_queued, pending)

    def record_timing(self, model: str, version: str, *, queue_s: float, compute_s: float) -> None:
        self._wait_sum += queue_s
        self._waits += 1

    def record_request(self, *args: Any, **kwargs: Any) -> None:
        pass

    def record_execution(self, *args: Any, **kwargs: Any) -> None:
        pass

    def record_isolation(self, *args: Any, **kwargs: Any) -> None:
        pass

    # -- executions -----------------------------------------------------------------------

    def enter(self) -> None:
        self._advance()
        self.inflight += 1

    def exit(self) -> None:
        self._advance()
        self.inflight -= 1

    def read(self) -> dict[str, float]:
        """Averages since the previous read; starts a new window."""
        self._advance()
        span = self._last - self._since
        out = {
            "queued": self._queued_area / span if span > 0 else float(self.queued),
            "queued_peak": float(self._peak_queued),
            "inflight": self._inflight_area / span if span > 0 else float(self.inflight),
            "queue_wait_s": self._wait_sum / self._waits if self._waits else 0.0,
        }
        self._since = self._last
        self._queued_area = self._inflight_area = self._wait_sum = 0.0
        self._waits = 0
        self._peak_queued = self.queued
        return out


def warmup_samples(spec: ModelSpec) -> list[ModelWarmup]:
    """The samples to run before ready: the config's ``model_warmup``, else one zero batch
    per preferred batch size and the maximum (Triton runs none by default; a cold first
    batch is what makes a fresh canary look slow)."""
    if spec.model_warmup:
        return list(spec.model_warmup)
    if not param_bool(spec, PARAM_WARMUP, True) or any(
        t.datatype == "BYTES" for t in spec.inputs if not t.optional
    ):
        return []
    if spec.max_batch_size > 0:
        preferred = spec.dynamic_batching.preferred_batch_size if spec.dynamic_batching else ()
        sizes = sorted(
            {*(b for b in preferred if b <= spec.max_batch_size), 1, spec.max_batch_size}
        )
    else:
        sizes = [0]
    from rayfront.spec import WarmupInput

    inputs = {
        t.name: WarmupInput(datatype=t.datatype, dims=tuple(max(d, 1) for d in t.dims))
        for t in spec.inputs
        if not t.optional
    }
    return [ModelWarmup(name=f"batch {b}", batch_size=b, inputs=inputs) for b in sizes]


def sample_inputs(sample: ModelWarmup, model_dir: Path, rng: np.random.Generator) -> TensorDict:
    """The tensors of one warm-up sample."""
    out: TensorDict = {}
    for name, wi in sample.inputs.items():
        shape = (sample.batch_size, *wi.dims) if sample.batch_size else tuple(wi.dims)
        dtype = to_numpy(wi.datatype)
        if wi.datatype == "BYTES":
            arr = np.full(shape, b"", dtype=np.object_)
        elif wi.source == "zero":
            arr = np.zeros(shape, dtype)
        elif wi.source == "random":
            if dtype.kind == "f":
                arr = rng.standard_normal(shape).astype(dtype)
            elif dtype.kind == "b":
                arr = rng.integers(0, 2, shape).astype(dtype)
            else:
                arr = rng.integers(0, 100, shape).astype(dtype)
        else:
            path = model_dir / "warmup" / wi.file
            raw = np.fromfile(path, dtype=dtype.newbyteorder("<"))
            one = int(np.prod(wi.dims))
            if raw.size != one:
                raise RepositoryError(
                    f"warm-up file {path}: {raw.size} {wi.datatype} values, expected {one} for "
                    f"dims {list(wi.dims)}"
                )
            arr = np.broadcast_to(raw.reshape(wi.dims), shape).astype(dtype)
        out[name] = np.ascontiguousarray(arr)
    return out


class VersionEngine:
    """Instances + batcher + warm-up for one model version (Ray-free)."""

    def __init__(
        self,
        spec: ModelSpec,
        version: str,
        version_dir: Path,
        runtimes: list[Runtime],
        pool: InstancePool,
        *,
        recorder: InferenceRecorder | None = None,
        settings: EngineSettings | None = None,
        copier: ThreadPoolExecutor | None = None,
    ) -> None:
        self.spec = spec
        self.version = version
        self.version_dir = version_dir
        self.runtimes = runtimes
        self.pool = pool
        self.settings = settings or EngineSettings()
        self.meter = LoadMeter()
        self._copier = copier
        self._recorders = [self.meter] if recorder is None else [recorder, self.meter]
        self.queue = self.make_queue()
        self.ready = False
        self.warmup_s = 0.0

    @classmethod
    def load(
        cls,
        spec: ModelSpec,
        version_dir: Path,
        version: str,
        *,
        recorder: InferenceRecorder | None = None,
        settings: EngineSettings | None = None,
        gpus_visible: int | None = None,
    ) -> VersionEngine:
        """Load the runtimes and build the instances (blocking: call it off the event loop)."""
        settings = settings or EngineSettings()
        if gpus_visible is None:
            gpus_visible = _visible_gpus()
        plan = instance_plan(spec, gpus_visible)
        threads = settings.copy_threads or min(4, os.cpu_count() or 1)
        copier = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rf-collate")
        runtimes: list[Runtime] = []
        instances: list[Instance] = []
        label = f"{spec.name}-v{version}"
        for device in plan.devices or (0,):
            first = load_runtime(spec, version_dir, device)
            runtimes.append(first)
            for i in range(plan.per_device):
                runtime = first if i == 0 else first.fork()
                program = runtime.device_program() if spec.max_batch_size > 0 else None
                if program is not None:
                    prog, dev = program
                    instances.append(
                        DevicePipeline(
                            CudaBackend(prog, spec, dev),
                            spec,
                            depth=settings.depth or GPU_DEPTH,
                            copier=copier,
                            name=f"{label}-{device}.{i}",
                        )
                    )
                else:
                    instances.append(
                        HostInstance(
                            runtime,
                            spec,
                            depth=settings.depth or CPU_DEPTH,
                            copier=copier,
                            name=f"{label}-{i}",
                        )
                    )
        logger.info(
            "model %r version %s: %d %s instance(s)%s, %d batches in flight at most",
            spec.name,
            version,
            len(instances),
            plan.kind,
            f" on GPUs {list(plan.devices)}" if plan.devices else "",
            sum(i.depth for i in instances),
        )
        return cls(
            spec,
            version,
            Path(version_dir),
            runtimes,
            InstancePool(instances),
            recorder=recorder,
            settings=settings,
            copier=copier,
        )

    def make_queue(self) -> DynamicBatcher | DirectExecutor:
        """A new batcher (or direct executor) over the instances.

        A batcher belongs to the event loop it first runs on; a caller moving the engine
        to another loop (a benchmark's next point) takes a new one.
        """
        return make_executor(
            self.spec,
            run_batch=self._run_batch,
            version=self.version,
            max_inflight=self.pool.capacity,
            metrics=RecorderGroup(*self._recorders),
        )

    async def _run_batch(self, items: list[TensorDict]) -> list[TensorDict]:
        self.meter.enter()
        try:
            return await self.pool.run(items)
        finally:
            self.meter.exit()

    async def warm_up(self) -> None:
        """Run the warm-up samples on every instance; then the engine is ready."""
        started = time.perf_counter()
        samples = (
            warmup_samples(self.spec) if self.settings.warmup or self.spec.model_warmup else []
        )
        rng = np.random.default_rng(0)
        model_dir = self.version_dir.parent
        explicit = bool(self.spec.model_warmup)
        for sample in samples:
            inputs = sample_inputs(sample, model_dir, rng)
            for instance in self.pool.instances:
                for _ in range(sample.count):
                    try:
                        await instance.run([inputs])
                    except RayfrontError as exc:
                        if explicit:
                            # The config asked for this sample: like Triton, the load fails.
                            raise RepositoryError(
                                f"model {self.spec.name!r} version {self.version}: warm-up "
                                f"sample {sample.name!r} failed: {exc.message}"
                            ) from None
                        # rayfront's own zero batches may be invalid for a model (ids that
                        # must be non-zero, shapes it refuses): warn, and serve anyway.
                        logger.warning(
                            "model %r version %s: default warm-up %s failed (%s); serving "
                            "without it",
                            self.spec.name,
                            self.version,
                            sample.name,
                            exc.message,
                        )
                        break
        self.warmup_s = time.perf_counter() - started
        self.ready = True
        if samples:
            logger.info(
                "model %r version %s warmed up in %.2fs (%s)",
                self.spec.name,
                self.version,
                self.warmup_s,
                ", ".join(s.name for s in samples),
            )

    async def submit(
        self,
        inputs: TensorDict,
        *,
        timeout_us: int | None = None,
        priority: int | None = None,
        timing: StageTiming | None = None,
    ) -> TensorDict:
        if not self.ready:
            raise UnavailableError(
                f"model {self.spec.name!r} version {self.version} is still warming up; retry"
            )
        return await self.queue.submit(
            inputs, timeout_us=timeout_us, priority=priority, timing=timing
        )

    async def handle(self, inputs: TensorDict, meta: RequestMeta) -> TensorDict:
        """The transport server's handler."""
        return await self.submit(
            inputs, timeout_us=meta.timeout_us, priority=meta.priority, timing=meta.timing
        )

    def load_report(self) -> dict[str, float]:
        """This window's load, for the autoscaler (see :mod:`rayfront.deploy.autoscaling`)."""
        report = self.meter.read()
        report["capacity"] = float(self.pool.capacity)
        report["max_batch"] = float(max(self.spec.max_batch_size, 1))
        return report

    def describe(self) -> dict[str, str]:
        out = dict(self.runtimes[0].describe()) if self.runtimes else {}
        out["instances"] = str(len(self.pool.instances))
        out["batches_in_flight"] = str(self.pool.capacity)
        out["warmup_s"] = f"{self.warmup_s:.2f}"
        return out

    async def close(self) -> None:
        """Finish queued work, then free the instances and runtimes."""
        await self.queue.close()
        await asyncio.to_thread(self.pool.close)
        if self._copier is not None:
            self._copier.shutdown(wait=False)
        for runtime in self.runtimes:
            runtime.close()


def _visible_gpus() -> int:
    """GPUs this process may use (Ray sets CUDA_VISIBLE_DEVICES for a replica)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0
