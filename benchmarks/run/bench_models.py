"""The benchmark models and the bench repository they are exported into.

Models are defined in :mod:`rayfront.benchmarks.run.torch_models` with random seeded weights
(speed does not depend on weights). They are exported with the real ``rayfront export``
into ``<results>/repository``; if that command fails, a fallback writes the same layout with
``torch.onnx.export`` and :func:`rayfront.repository.pbtxt.render_config`, and the results
record which path built the file. Each dynamic-batching setting then gets its own copy of
the repository whose ``config.pbtxt`` differs only in ``dynamic_batching`` and
``instance_group`` (batching off = no ``dynamic_batching`` block at all).

torch is only imported by the export fallback; serving and measuring never need it.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from rayfront.benchmarks.run.sweep_config import BatchingSetting
from rayfront.errors import FailedPreconditionError, InvalidArgumentError

logger = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
VERSION = "1"


@dataclass(frozen=True, slots=True)
class BenchModel:
    """One benchmark model: how to build it and how to feed it."""

    name: str
    factory: str
    description: str
    input_name: str
    input_dtype: str
    row_shape: tuple[int, ...]
    output_name: str
    max_batch_size: int
    raw_batches: tuple[int, ...]
    p99_bound_ms: float
    gpu_p99_bound_ms: float
    default_on_cpu: bool = True
    default_on_gpu: bool = True

    def p99_bound(self, device: str) -> float:
        """The knee's p99 bound for this model on ``device`` (CLI --p99-ms overrides it)."""
        return self.gpu_p99_bound_ms if device == "cuda" else self.p99_bound_ms


MODELS: dict[str, BenchModel] = {
    m.name: m
    for m in (
        BenchModel(
            name="mlp",
            factory="rayfront.benchmarks.run.torch_models:mlp",
            description="tiny MLP 64-128-128-10 (26 k params): per-call overhead dominates",
            input_name="x",
            input_dtype="FP32",
            row_shape=(64,),
            output_name="logits",
            max_batch_size=128,
            raw_batches=(1, 2, 4, 8, 16, 32, 64, 128),
            p99_bound_ms=50.0,
            gpu_p99_bound_ms=20.0,
        ),
        BenchModel(
            name="cnn",
            factory="rayfront.benchmarks.run.torch_models:cnn",
            description="ResNet-18-size CNN, 3x224x224 input (11.7 M params, random weights)",
            input_name="x",
            input_dtype="FP32",
            row_shape=(3, 224, 224),
            output_name="logits",
            max_batch_size=32,
            raw_batches=(1, 2, 4, 8, 16, 32),
            p99_bound_ms=2000.0,
            gpu_p99_bound_ms=50.0,
        ),
        BenchModel(
            name="resnet50",
            factory="rayfront.benchmarks.run.torch_models:resnet50",
            description="ResNet-50-size CNN, 3x224x224 input (25.6 M params, random weights)",
            input_name="x",
            input_dtype="FP32",
            row_shape=(3, 224, 224),
            output_name="logits",
            max_batch_size=64,
            raw_batches=(1, 2, 4, 8, 16, 32, 64),
            p99_bound_ms=5000.0,
            gpu_p99_bound_ms=100.0,
            default_on_cpu=False,
        ),
    )
}


def get_model(name: str) -> BenchModel:
    """The model called ``name``, or an error listing the known ones."""
    try:
        return MODELS[name]
    except KeyError:
        raise InvalidArgumentError(
            f"unknown benchmark model {name!r}; expected one of {sorted(MODELS)}"
        ) from None


def default_models(device: str) -> list[str]:
    """Models a full sweep measures on ``device``."""
    key = "default_on_gpu" if device == "cuda" else "default_on_cpu"
    return [m.name for m in MODELS.values() if getattr(m, key)]


def model_file(repository: Path, model: str) -> Path:
    """The ONNX file of the newest version of ``model`` in ``repository``."""
    model_dir = repository / model
    versions = (
        sorted(
            (int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()),
            reverse=True,
        )
        if model_dir.is_dir()
        else []
    )
    for v in versions:
        path = model_dir / str(v) / MODEL_FILE
        if path.is_file():
            return path
    raise FailedPreconditionError(
        f"model {model!r}: no version with {MODEL_FILE} under {model_dir}"
    )


def _rayfront_command() -> list[str]:
    """How to run the ``rayfront`` CLI from this interpreter's environment."""
    script = Path(sys.executable).with_name("rayfront")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from rayfront.cli import main; main()"]


def rayfront_command() -> list[str]:
    """Public alias used by the rayfront target and the tests."""
    return _rayfront_command()


def export_args(model: BenchModel, repository: Path) -> list[str]:
    """Arguments of ``rayfront export`` for ``model`` (shape without the batch dim)."""
    shape = ",".join(str(d) for d in model.row_shape)
    return [
        "export",
        model.factory,
        "--name",
        model.name,
        "--input",
        f"{model.input_name}:{model.input_dtype}:{shape}",
        "--output",
        model.output_name,
        "--max-batch-size",
        str(model.max_batch_size),
        "--repository",
        str(repository),
    ]


def export_model(
    model: BenchModel, repository: Path, log_path: Path, timeout_s: float = 900
) -> str:
    """Make sure ``repository`` holds ``model``; return how it got there (for the results)."""
    try:
        model_file(repository, model.name)
        return "reused existing export"
    except FailedPreconditionError:
        pass
    repository.mkdir(parents=True, exist_ok=True)
    cmd = [*_rayfront_command(), *export_args(model, repository)]
    logger.info("exporting %s: %s", model.name, " ".join(cmd))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(("$ " + " ".join(cmd) + "\n").encode())
        log.flush()
        try:
            proc = subprocess.run(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout_s,
                env=_export_env(),
                check=False,
            )
            rc: int | str = proc.returncode
        except subprocess.TimeoutExpired:
            rc = f"timeout after {timeout_s:.0f}s"
    try:
        model_file(repository, model.name)
        if rc == 0:
            return "rayfront export"
    except FailedPreconditionError:
        pass
    reason = f"`rayfront export` exited with {rc} (see {log_path})"
    logger.warning("%s; falling back to torch.onnx.export for %s", reason, model.name)
    shutil.rmtree(repository / model.name, ignore_errors=True)
    _export_fallback(model, repository)
    return f"fallback torch.onnx.export: {reason}"


def _export_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def _export_fallback(model: BenchModel, repository: Path) -> None:
    """Write ``<repo>/<name>/1/model.onnx`` + config.pbtxt without the export CLI."""
    import importlib

    import torch

    from rayfront.dtypes import to_torch
    from rayfront.repository.pbtxt import render_config
    from rayfront.spec import PLATFORM_ONNX, ModelSpec, TensorSpec

    module_name, _, attr = model.factory.partition(":")
    net = getattr(importlib.import_module(module_name), attr)()
    example = torch.zeros((2, *model.row_shape), dtype=to_torch(model.input_dtype))
    version_dir = repository / model.name / VERSION
    version_dir.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        out = net(example)
        torch.onnx.export(
            net,
            (example,),
            str(version_dir / MODEL_FILE),
            input_names=[model.input_name],
            output_names=[model.output_name],
            dynamic_axes={model.input_name: {0: "batch"}, model.output_name: {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    spec = ModelSpec(
        name=model.name,
        platform=PLATFORM_ONNX,
        max_batch_size=model.max_batch_size,
        inputs=(
            TensorSpec(name=model.input_name, datatype=model.input_dtype, dims=model.row_shape),
        ),
        outputs=(TensorSpec(name=model.output_name, datatype="FP32", dims=tuple(out.shape[1:])),),
    )
    (repository / model.name / "config.pbtxt").write_text(render_config(spec), encoding="utf-8")


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def make_variant(
    source: Path, model: str, dest: Path, setting: BatchingSetting, device: str = "cpu"
) -> Path:
    """Copy ``model`` from ``source`` into ``dest`` with ``setting`` written into its config.

    Only ``dynamic_batching``, ``instance_group`` and the replica parameters change. Model
    files are hard-linked, so every variant serves byte-identical weights; ``config.pbtxt``
    is always a new file of the variant's own (written through a hard link, it would change
    the source and every other variant too). Returns the variant's model directory.
    """
    from rayfront.repository.pbtxt import read_config, render_config
    from rayfront.settings import PARAM_MAX_REPLICAS, PARAM_MIN_REPLICAS
    from rayfront.spec import DynamicBatching, InstanceGroup

    src_dir = source / model
    spec = read_config(src_dir)
    dst_dir = dest / model
    if dst_dir.exists():
        shutil.rmtree(dst_dir)
    shutil.copytree(
        src_dir,
        dst_dir,
        copy_function=_link_or_copy,
        ignore=shutil.ignore_patterns("config.pbtxt"),
    )
    batching = None
    max_batch = spec.max_batch_size
    if setting.enabled:
        max_batch = setting.max_batch_size or spec.max_batch_size
        batching = DynamicBatching(max_queue_delay_microseconds=setting.max_queue_delay_us)
    kind = "KIND_GPU" if device == "cuda" else "KIND_CPU"
    replicas = str(setting.replicas)
    new = spec.model_copy(
        update={
            "max_batch_size": max(max_batch, 1),
            "dynamic_batching": batching,
            "instance_groups": (InstanceGroup(kind=kind, count=1),),
            "parameters": {
                **spec.parameters,
                PARAM_MIN_REPLICAS: replicas,
                PARAM_MAX_REPLICAS: replicas,
            },
        }
    )
    (dst_dir / "config.pbtxt").write_text(render_config(new), encoding="utf-8")
    return dst_dir


def add_onnx_version(root: Path, graph: object, spec: object, source: str) -> Path:
    """Write ``graph`` (an ONNX GraphProto, opset 18) as a new version of ``spec``'s model
    in the repository at ``root``; returns the version's model file."""
    import datetime as dt

    import onnx
    from onnx import helper

    from rayfront.repository.sidecar import Provenance
    from rayfront.repository.writer import write_version

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    root.mkdir(parents=True, exist_ok=True)
    name = spec.name  # type: ignore[attr-defined]
    path = root.parent / f"{name}.onnx"
    onnx.save(model, str(path))
    prov = Provenance(source=source, created_at=dt.datetime.now(dt.UTC), exporter="external")
    version_dir = write_version(root, spec, {"model.onnx": path}, prov)  # type: ignore[arg-type]
    return Path(version_dir) / "model.onnx"
