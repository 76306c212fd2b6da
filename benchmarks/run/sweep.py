"""The sweep runner: every target, every concurrency level, every batching setting, one run.

For each model: export it (or reuse the bench repository), time the raw ONNX Runtime limit,
then start each server in turn, measure it at every concurrency level with the built-in
closed-loop client, and stop it before the next one starts so targets never compete for
the cores. A failed target is recorded with its reason and the sweep goes on. Partial
results are written after every target, and servers are stopped in ``finally`` blocks,
so Ctrl-C leaves no process behind and keeps what was measured.

The progress bar shows the current step (``step i/N``), the time elapsed and an ETA
computed from the planned seconds of the remaining steps.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import platform
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from rayfront.benchmarks.analysis.report import write_report
from rayfront.benchmarks.analysis.results import (
    LatencySummary,
    ModelResult,
    Point,
    RunMeta,
    SweepResult,
    TargetResult,
    write_json,
)
from rayfront.benchmarks.load import closed_loop as client
from rayfront.benchmarks.run.bench_models import (
    BenchModel,
    export_model,
    get_model,
    make_variant,
    model_file,
)
from rayfront.benchmarks.run.sweep_config import BATCHED_TARGETS, BatchingSetting, SweepConfig
from rayfront.benchmarks.targets.target import (
    BareServer,
    Endpoint,
    MeasureOptions,
    PlainServeServer,
    Server,
    Workload,
    measure_endpoint,
)
from rayfront.dtypes import to_numpy
from rayfront.errors import RayfrontError

logger = logging.getLogger(__name__)

# Planned seconds for steps whose length is not set by the config (ETA only).
_EXPORT_S = {"mlp": 15.0, "cnn": 60.0, "resnet50": 90.0}
_START_S = {"batcher": 2.0, "bare": 4.0, "serve": 25.0, "rayfront": 45.0}
# Failures a target can hit that must not end the sweep: our own errors, OS/process
# trouble, ORT/gRPC runtime failures (RuntimeError), bad values from a broken server.
# Anything else is a bug in the benchmark itself and stops the run loudly.
# ImportError: a runtime or torch (export fallback) missing on this host.
TARGET_FAILURES = (RayfrontError, OSError, RuntimeError, ValueError, TimeoutError, ImportError)

_VERSIONED = (
    "rayfront",
    "onnxruntime",
    "numpy",
    "ray",
    "torch",
    "tritonclient",
    "grpcio",
    "uvicorn",
    "locust",
)


def versions() -> dict[str, str]:
    """Installed versions of the packages that shape the numbers (no imports)."""
    out: dict[str, str] = {}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


# --- plan and progress --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """One unit of progress: what it is and how long it is planned to take."""

    label: str
    planned_s: float


def point_seconds(cfg: SweepConfig) -> float:
    return cfg.warmup_s + cfg.duration_s + 0.3


def raw_seconds_per_batch(cfg: SweepConfig) -> float:
    return max(cfg.duration_s / 4, 0.3)


def raw_batches(cfg: SweepConfig, model: BenchModel) -> tuple[int, ...]:
    if cfg.raw_batches is not None:
        return cfg.raw_batches
    if cfg.quick:
        return tuple(b for b in model.raw_batches if b in (1, 8, 32)) or model.raw_batches[:1]
    return model.raw_batches


def plan(cfg: SweepConfig) -> list[Step]:
    """Every step of the sweep in order (the progress bar's N and its ETA)."""
    return [step for name in cfg.models for step in plan_model(cfg, name)]


def plan_model(cfg: SweepConfig, name: str) -> list[Step]:
    """The steps of one model, in the order :class:`Runner` performs them."""
    steps: list[Step] = []
    per_point = point_seconds(cfg)
    levels = cfg.concurrency
    model = get_model(name)
    steps.append(Step(f"{name}: export", 1.0 if cfg.repository else _EXPORT_S.get(name, 30.0)))
    if "raw" in cfg.targets:
        batches = raw_batches(cfg, model)
        steps.append(
            Step(f"{name}: raw session.run sweep", len(batches) * raw_seconds_per_batch(cfg) + 1)
        )
    for setting in cfg.batching if "batcher" in cfg.targets else ():
        steps.append(Step(f"{name}: start batcher [{setting.label}]", _START_S["batcher"]))
        steps += [Step(f"{name}: batcher [{setting.label}] c={c}", per_point) for c in levels]
    for target in ("bare", "serve"):
        if target in cfg.targets:
            steps.append(Step(f"{name}: start {target}", _START_S[target]))
            steps += [Step(f"{name}: {target} c={c}", per_point) for c in levels]
    protocols = [t for t in ("rayfront-http", "rayfront-grpc") if t in cfg.targets]
    for setting in cfg.batching if protocols else ():
        steps.append(Step(f"{name}: start rayfront [{setting.label}]", _START_S["rayfront"]))
        steps += [
            Step(f"{name}: {t} [{setting.label}] c={c}", per_point)
            for t in protocols
            for c in levels
        ]
    return steps


class Tracker:
    """Drives the rich progress bar: current step, step i/N, elapsed, ETA."""

    def __init__(self, steps: list[Step], progress: Any | None) -> None:
        self.steps = steps
        self.total_s = sum(s.planned_s for s in steps)
        self.progress = progress
        self.index = 0
        self._base = 0.0
        self._task = None
        if progress is not None:
            self._task = progress.add_task("starting", total=self.total_s, step=self._step_text())

    def _step_text(self) -> str:
        return f"step {min(self.index + 1, len(self.steps))}/{len(self.steps)}"

    def _current(self) -> Step:
        return self.steps[min(self.index, len(self.steps) - 1)]

    def begin(self) -> str:
        step = self._current()
        if self.progress is not None:
            self.progress.update(
                self._task, description=step.label, step=self._step_text(), completed=self._base
            )
        return step.label

    def tick(self, elapsed_s: float) -> None:
        if self.progress is not None:
            planned = self._current().planned_s
            self.progress.update(self._task, completed=self._base + min(elapsed_s, planned))

    def end(self) -> None:
        self._base += self._current().planned_s
        self.index += 1
        if self.progress is not None:
            self.progress.update(self._task, completed=self._base, step=self._step_text())

    def skip(self, n: int) -> None:
        for _ in range(n):
            self.end()

    def skip_to(self, index: int) -> None:
        """End every step before ``index`` (a model whose export failed)."""
        while self.index < min(index, len(self.steps)):
            self.end()


def _progress(enabled: bool) -> Any:
    if not enabled:
        return None
    from rich.progress import (
        BarColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        SpinnerColumn(),
        TextColumn("[bold cyan]{task.fields[step]}"),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        transient=False,
    )


@contextmanager
def _maybe(progress: Any) -> Iterator[None]:
    if progress is None:
        yield
        return
    with progress:
        yield


# --- measuring ----------------------------------------------------------------------------


def workload(model: BenchModel, rows: int, seed: int = 0) -> Workload:
    """Random inputs with ``rows`` rows (random weights make real inputs pointless here)."""
    rng = np.random.default_rng(seed)
    dtype = to_numpy(model.input_dtype)
    shape = (rows, *model.row_shape)
    data = (
        rng.standard_normal(shape).astype(dtype)
        if dtype.kind == "f"
        else rng.integers(0, 100, shape).astype(dtype)
    )
    return Workload(model=model.name, inputs={model.input_name: data}, output=model.output_name)


def to_point(loop: client.LoopResult, concurrency: int, rows: int) -> Point:
    requests = len(loop.latencies_s)
    rps = requests / loop.duration_s if loop.duration_s > 0 else 0.0
    return Point(
        concurrency=concurrency,
        request_batch=rows,
        duration_s=loop.duration_s,
        requests=requests,
        errors=loop.errors,
        req_per_s=rps,
        rows_per_s=rps * rows,
        latency=LatencySummary.of(loop.latencies_s),
        error_samples=loop.error_samples(),
    )


def _log_point(model: str, label: str, p: Point) -> None:
    logger.info(
        "%s %s c=%d: %.1f req/s, %.1f rows/s, p50 %.2f ms, p99 %.2f ms, %d errors",
        model, label, p.concurrency, p.req_per_s, p.rows_per_s, p.p50_ms, p.p99_ms, p.errors,
    )  # fmt: skip


class Runner:
    """Runs one :class:`SweepConfig` and returns its :class:`SweepResult`."""

    def __init__(self, cfg: SweepConfig, show_progress: bool = True) -> None:
        self.cfg = cfg
        self.out = cfg.out
        self.logs = cfg.out / "logs"
        self.show_progress = show_progress
        self.result = SweepResult(
            meta=RunMeta(
                started_at=dt.datetime.now().isoformat(timespec="seconds"),
                host=socket.gethostname(),
                cpu_count=os.cpu_count() or 1,
                platform=f"{platform.system()} {platform.machine()}",
                python=platform.python_version(),
                versions=versions(),
                client=client.CLIENT_DESCRIPTION,
                config=cfg,
            )
        )
        self.tracker: Tracker | None = None

    # -- top level -----------------------------------------------------------------

    def run(self) -> SweepResult:
        self.out.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        steps = plan(self.cfg)
        logger.info(
            "sweep of %d steps, about %.0f s planned; results in %s",
            len(steps),
            sum(s.planned_s for s in steps),
            self.out,
        )
        progress = _progress(self.show_progress)
        try:
            with _maybe(progress):
                self.tracker = Tracker(steps, progress)
                for name in self.cfg.models:
                    self._model(get_model(name))
        except KeyboardInterrupt:
            self._mark_interrupted()
            raise
        finally:
            self.result.meta.finished_at = dt.datetime.now().isoformat(timespec="seconds")
            write_json(self.result, self.out)
        write_report(self.result, self.out)
        return self.result

    def _mark_interrupted(self) -> None:
        """Targets cut short by Ctrl-C/SIGTERM say so instead of looking complete."""
        levels = len(self.cfg.concurrency)
        for m in self.result.models:
            if m.raw_status == "skipped" and "raw" in self.cfg.targets:
                m.raw_status, m.raw_reason = "failed", "interrupted before the raw sweep finished"
            for t in m.targets:
                if t.status == "ok" and len(t.points) < levels:
                    t.status = "failed"
                    t.reason = f"interrupted after {len(t.points)} of {levels} concurrency levels"

    def _save(self) -> None:
        write_json(self.result, self.out)

    # -- one model -----------------------------------------------------------------

    def _model(self, model: BenchModel) -> None:
        cfg = self.cfg
        tracker = self._tracker()
        p99 = cfg.p99_ms if cfg.p99_ms is not None else model.p99_bound(cfg.device)
        mr = ModelResult(model=model.name, description=model.description, p99_bound_ms=p99)
        self.result.models.append(mr)
        repository = cfg.repository or self.out / "repository"
        last_step = tracker.index + len(plan_model(cfg, model.name))
        tracker.begin()
        try:
            if cfg.repository is not None:
                model_file(repository, model.name)
                mr.export = f"reused {repository}"
            else:
                mr.export = export_model(model, repository, self.logs / f"export-{model.name}.log")
            onnx_path = model_file(repository, model.name)
        except TARGET_FAILURES as err:
            logger.error("model %s: export failed: %s", model.name, err)
            mr.export = f"failed: {err}"
            self._fail_all(mr, f"export failed: {err}")
            tracker.skip_to(last_step)  # nothing else of this model can run
            return
        tracker.end()
        work = workload(model, cfg.request_batch)

        if "raw" in cfg.targets:
            self._raw(mr, model, onnx_path)
        variants = self._variants(model, repository)
        if "batcher" in cfg.targets:
            for setting in cfg.batching:
                self._batcher(mr, work, setting, variants)
        if "bare" in cfg.targets:
            bare = BareServer(self.logs, model.name, onnx_path, cfg.device, cfg.tensorrt)
            self._served(mr, bare, work, "")
        if "serve" in cfg.targets:
            plain = PlainServeServer(
                self.logs,
                model.name,
                onnx_path,
                cfg.device,
                cfg.tensorrt,
                max_batch_size=model.max_batch_size,
            )
            self._served(mr, plain, work, "")
        protocols = tuple(
            t.removeprefix("rayfront-")
            for t in ("rayfront-http", "rayfront-grpc")
            if t in cfg.targets
        )
        if protocols:
            from rayfront.benchmarks.targets.rayfront_server import RayfrontServer

            for setting in cfg.batching:
                variant = variants.get(setting.label)
                server = RayfrontServer(
                    self.logs, model.name, variant or Path("/nonexistent"), setting.label, protocols
                )
                self._served(
                    mr,
                    server,
                    work,
                    setting.label,
                    variant_error=None if variant else "variant repository missing",
                )

    def _tracker(self) -> Tracker:
        if self.tracker is None:
            raise RuntimeError("Runner.run() sets up the tracker before measuring")
        return self.tracker

    def _fail_all(self, mr: ModelResult, reason: str) -> None:
        if "raw" in self.cfg.targets:
            mr.raw_status, mr.raw_reason = "failed", reason
        for t in self.cfg.targets:
            if t == "raw":
                continue
            for setting in self.cfg.batching if t in BATCHED_TARGETS else [None]:
                mr.targets.append(
                    TargetResult(
                        target=t,
                        batching=setting.label if setting else "",
                        status="failed",
                        reason=reason,
                    )
                )
        self._save()

    def _variants(self, model: BenchModel, repository: Path) -> dict[str, Path]:
        """One repository per batching setting (only when a batched target runs)."""
        if not any(t in BATCHED_TARGETS for t in self.cfg.targets):
            return {}
        out: dict[str, Path] = {}
        for setting in self.cfg.batching:
            # One repository per (model, setting): a server must not load other models.
            dest = self.out / "repos" / model.name / setting.label.replace(":", "-")
            try:
                make_variant(repository, model.name, dest, setting, self.cfg.device)
                out[setting.label] = dest
            except TARGET_FAILURES as err:
                logger.error(
                    "model %s: cannot write batching variant %s: %s", model.name, setting.label, err
                )
        return out

    # -- targets -------------------------------------------------------------------

    def _raw(self, mr: ModelResult, model: BenchModel, onnx_path: Path) -> None:
        from rayfront.benchmarks.targets.raw import raw_sweep

        tracker = self._tracker()
        tracker.begin()
        batches = raw_batches(self.cfg, model)
        t0 = time.monotonic()
        try:
            mr.raw = raw_sweep(
                onnx_path,
                batches,
                raw_seconds_per_batch(self.cfg),
                device=self.cfg.device,
                tensorrt=self.cfg.tensorrt,
                on_batch_done=lambda _b: tracker.tick(time.monotonic() - t0),
            )
            mr.raw_status = "ok"
            best = mr.raw_limit
            if best is not None:
                logger.info(
                    "%s raw limit: %.1f rows/s at batch %d",
                    model.name,
                    best.rows_per_s,
                    best.batch_size,
                )
        except TARGET_FAILURES as err:
            logger.error("%s raw sweep failed: %s", model.name, err)
            mr.raw_status, mr.raw_reason = "failed", str(err)
        finally:
            tracker.end()
            self._save()

    def _batcher(
        self, mr: ModelResult, work: Workload, setting: BatchingSetting, variants: dict[str, Path]
    ) -> None:
        from rayfront.benchmarks.targets.in_process import InProcessBatcher

        tracker = self._tracker()
        result = TargetResult(target="batcher", batching=setting.label, status="ok")
        mr.targets.append(result)
        tracker.begin()
        t0 = time.monotonic()
        batcher = None
        try:
            variant = variants.get(setting.label)
            if variant is None:
                raise RayfrontError(
                    f"failed to start: no repository variant for batching {setting.label}"
                )
            batcher = InProcessBatcher(variant, work.model)
            result.startup_s = time.monotonic() - t0
        except TARGET_FAILURES as err:
            result.status, result.reason = "failed", _start_reason(err)
            logger.error("%s batcher [%s]: %s", work.model, setting.label, result.reason)
        finally:
            tracker.end()
        if batcher is None:
            tracker.skip(len(self.cfg.concurrency))
            self._save()
            return
        try:
            for c in self.cfg.concurrency:
                tracker.begin()
                try:
                    loop = batcher.measure(
                        work, c, self.cfg.duration_s, self.cfg.warmup_s, tracker.tick
                    )
                finally:
                    tracker.end()
                point = to_point(loop, c, work.rows)
                result.points.append(point)
                _log_point(work.model, result.label, point)
        finally:
            batcher.close()
            self._save()

    def _served(
        self,
        mr: ModelResult,
        server: Server,
        work: Workload,
        batching: str,
        variant_error: str | None = None,
    ) -> None:
        """Start ``server``, measure each endpoint at every level, stop it."""
        tracker = self._tracker()
        names = _endpoint_names(server)
        results = {n: TargetResult(target=n, batching=batching, status="ok") for n in names}
        mr.targets.extend(results.values())
        points_per_endpoint = len(self.cfg.concurrency)
        tracker.begin()
        started = False
        try:
            try:
                if variant_error:
                    raise RayfrontError(f"failed to start: {variant_error}")
                startup = server.start(self.cfg.startup_timeout_s)
                started = True
                for r in results.values():
                    r.startup_s = startup
                logger.info("%s ready in %.1f s", server.name, startup)
            except TARGET_FAILURES as err:
                reason = _start_reason(err)
                logger.error("%s: %s", server.name, reason.splitlines()[0])
                for r in results.values():
                    r.status, r.reason = "failed", reason
            finally:
                tracker.end()
            if not started:
                tracker.skip(points_per_endpoint * len(names))
                return
            opts = MeasureOptions(
                duration_s=self.cfg.duration_s,
                warmup_s=self.cfg.warmup_s,
                timeout_s=self.cfg.request_timeout_s,
                grpc_channels=self.cfg.grpc_channels,
                on_tick=tracker.tick,
            )
            for endpoint in server.endpoints():
                self._measure_endpoint(server, endpoint, results[endpoint.target], work, opts)
        finally:
            server.stop()
            self._save()

    def _measure_endpoint(
        self,
        server: Server,
        endpoint: Endpoint,
        result: TargetResult,
        work: Workload,
        opts: MeasureOptions,
    ) -> None:
        tracker = self._tracker()
        for i, c in enumerate(self.cfg.concurrency):
            tracker.begin()
            try:
                loop = measure_endpoint(endpoint, work, c, opts)
            except TARGET_FAILURES as err:
                result.status, result.reason = (
                    "failed",
                    f"measurement failed at concurrency {c}: {err}",
                )
                logger.error("%s %s: %s", work.model, result.label, result.reason)
                tracker.end()
                tracker.skip(len(self.cfg.concurrency) - i - 1)
                return
            tracker.end()
            point = to_point(loop, c, work.rows)
            result.points.append(point)
            _log_point(work.model, result.label, point)
            process = getattr(server, "process", None)
            if process is not None and not process.running:
                result.status, result.reason = (
                    "failed",
                    f"server died during the sweep: {process.failure()}",
                )
                logger.error("%s: %s", server.name, result.reason.splitlines()[0])
                tracker.skip(len(self.cfg.concurrency) - i - 1)
                return


def _endpoint_names(server: Server) -> list[str]:
    """Target names a server will expose, known before it starts."""
    from rayfront.benchmarks.targets.rayfront_server import RayfrontServer

    if isinstance(server, RayfrontServer):
        return [f"rayfront-{p}" for p in server.protocols]
    if isinstance(server, BareServer):
        return ["bare"]
    if isinstance(server, PlainServeServer):
        return ["serve"]
    return [server.name]


def _start_reason(err: BaseException) -> str:
    text = err.message if isinstance(err, RayfrontError) else f"{type(err).__name__}: {err}"
    return text if text.startswith("failed to start") else f"failed to start: {text}"


def run_sweep(cfg: SweepConfig, show_progress: bool | None = None) -> SweepResult:
    """Run the sweep described by ``cfg``; write results, plots and summary into ``cfg.out``."""
    if show_progress is None:
        show_progress = sys.stderr.isatty()
    return Runner(cfg, show_progress=show_progress).run()
