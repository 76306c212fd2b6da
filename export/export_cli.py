"""``rayfront export``: PyTorch model -> ONNX (-> TensorRT) -> new version in a Triton repository.

Thin: it turns flags into an :class:`~rayfront.export.request.ExportRequest` and calls
:func:`~rayfront.export.pipeline.export_model`. torch and the exporters are imported inside
the command so ``rayfront --help`` stays fast. On success the last line of stdout is the
new version folder; any rayfront error is one ``error: ...`` line on stderr and exit code 1
(``--debug`` adds the traceback).
"""

from __future__ import annotations

import enum
import logging
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer

from rayfront.errors import InputSpecError, RayfrontError


class Precision(enum.StrEnum):
    """``--precision`` choices."""

    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


class TensorRTMode(enum.StrEnum):
    """``--tensorrt`` choices."""

    auto = "auto"
    on = "on"
    off = "off"


class InstanceKind(enum.StrEnum):
    """``--instance-kind`` choices."""

    cpu = "cpu"
    gpu = "gpu"


def _validation_error(err: Any) -> InputSpecError:
    """A pydantic ValidationError as one line naming the flag."""
    first = err.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    flag = {
        "model_ref": "MODEL_REF",
        "preferred_batch_sizes": "--preferred-batch-size",
        "parity_batch_sizes": "--parity-batch-size",
        "max_queue_delay_us": "--max-queue-delay-us",
        "trt_workspace_mb": "--trt-workspace-mb",
    }.get(field, "--" + field.replace("_", "-"))
    value = first.get("input")
    return InputSpecError(f"{flag} {value!r}: {first['msg']}")


def export_command(
    model_ref: Annotated[
        str,
        typer.Argument(
            metavar="MODEL_REF",
            help="The PyTorch model: package.module:factory (called with no arguments, returns "
            "an nn.Module), path/to/file.py:factory, a TorchScript file (.pt/.ts) or a "
            "torch.export program (.pt2).",
            show_default=False,
        ),
    ],
    name: Annotated[
        str,
        typer.Option("--name", "-n", help="Model name in the repository.", show_default=False),
    ],
    inputs: Annotated[
        list[str],
        typer.Option(
            "--input",
            "-i",
            metavar="NAME:DTYPE:SHAPE",
            help="A model input, in forward() argument order; repeat per input. DTYPE is a "
            "Triton name (FP32, FP16, INT64, INT32, BOOL, ...). SHAPE is comma separated, -1 "
            "for a dynamic dim, WITHOUT the batch dim when --max-batch-size > 0. "
            "Example: pixels:FP32:1,8,8",
            show_default=False,
        ),
    ],
    max_batch_size: Annotated[
        int,
        typer.Option(
            "--max-batch-size",
            "-b",
            help="Largest batch the model serves; the batch dim is then implicit and dynamic. "
            "0 = the model does not batch and SHAPE is the full shape.",
            show_default=False,
        ),
    ],
    outputs: Annotated[
        list[str] | None,
        typer.Option(
            "--output",
            "-o",
            metavar="NAME[:DTYPE:SHAPE]",
            help="Output names in return order (tuple/dict order); repeat per output. Default "
            "output__0, output__1, ... DTYPE and SHAPE, when given, are checked.",
            show_default=False,
        ),
    ] = None,
    repository: Annotated[
        Path,
        typer.Option("--repository", "-r", help="Triton model repository to write into."),
    ] = Path("model_repository"),
    tensorrt: Annotated[
        TensorRTMode,
        typer.Option(
            "--tensorrt",
            case_sensitive=False,
            help="Also build a TensorRT plan as model NAME_trt: auto = when TensorRT and a "
            "CUDA GPU are present (else say why and go on), on = fail without them, off = never.",
        ),
    ] = TensorRTMode.auto,
    fp16: Annotated[
        bool, typer.Option("--fp16", help="Allow FP16 kernels in the TensorRT plan.")
    ] = False,
    precision: Annotated[
        Precision,
        typer.Option(
            "--precision",
            case_sensitive=False,
            help="GPU compute precision of the TorchScript model (config parameter "
            "rayfront.precision) and the TensorRT plan. Clients keep sending FP32; parity is "
            "checked in this precision with --fp16-atol/--fp16-rtol (bf16: --bf16-rtol).",
        ),
    ] = Precision.fp32,
    fp16_atol: Annotated[
        float, typer.Option("--fp16-atol", help="Parity atol for FP16/BF16 artifacts.")
    ] = 1e-2,
    fp16_rtol: Annotated[
        float, typer.Option("--fp16-rtol", help="Parity rtol for FP16 artifacts.")
    ] = 1e-2,
    bf16_rtol: Annotated[
        float, typer.Option("--bf16-rtol", help="Parity rtol for BF16 artifacts.")
    ] = 4e-2,
    trt_shapes: Annotated[
        list[str] | None,
        typer.Option(
            "--trt-shape",
            metavar="NAME:MIN/OPT/MAX",
            help="TensorRT profile range of an input's dynamic non-batch dims, e.g. "
            "input_ids:1/128/256 (batch dim excluded). Parity checks use MIN and MAX too.",
            show_default=False,
        ),
    ] = None,
    trt_workspace_mb: Annotated[
        int, typer.Option("--trt-workspace-mb", help="TensorRT builder workspace limit (MiB).")
    ] = 2048,
    atol: Annotated[
        float, typer.Option("--atol", help="Parity: absolute tolerance vs PyTorch.")
    ] = 1e-4,
    rtol: Annotated[
        float, typer.Option("--rtol", help="Parity: relative tolerance vs PyTorch.")
    ] = 1e-3,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset version.")] = 18,
    legacy_exporter: Annotated[
        bool,
        typer.Option(
            "--legacy-exporter",
            help="Use the legacy TorchScript-based ONNX exporter instead of trying dynamo first.",
        ),
    ] = False,
    torchscript: Annotated[
        bool,
        typer.Option(
            "--torchscript",
            help="Also write a TorchScript model.pt as model NAME_torchscript (pytorch_libtorch).",
        ),
    ] = False,
    preferred_batch_sizes: Annotated[
        list[int] | None,
        typer.Option(
            "--preferred-batch-size",
            help="Dynamic batcher's preferred batch size; repeatable. Default: max/2 and max.",
            show_default=False,
        ),
    ] = None,
    max_queue_delay_us: Annotated[
        int,
        typer.Option(
            "--max-queue-delay-us", help="Longest a request waits for a fuller batch (µs)."
        ),
    ] = 500,
    instance_kind: Annotated[
        InstanceKind,
        typer.Option(
            "--instance-kind",
            case_sensitive=False,
            help="Where the ONNX/TorchScript model runs (a TensorRT plan is always GPU).",
        ),
    ] = InstanceKind.cpu,
    instance_count: Annotated[
        int, typer.Option("--instance-count", help="Instances (initial replicas).")
    ] = 1,
    version_policy: Annotated[
        str,
        typer.Option(
            "--version-policy",
            help="Versions to serve: latest, latest:N, all, or specific:1,3.",
        ),
    ] = "latest",
    parity_batch_sizes: Annotated[
        list[int] | None,
        typer.Option(
            "--parity-batch-size",
            help="Batch size to check parity at; repeatable. Default: 1, max/2, max.",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the parity inputs.")] = 0,
    reference_data: Annotated[
        Path | None,
        typer.Option(
            "--reference",
            help="An .npz of real inputs (one array per input, rows first): its profile goes "
            "into the sidecar and live drift is measured against it. Default: the parity "
            "inputs (random data).",
        ),
    ] = None,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show progress on stderr.")
    ] = True,
    debug: Annotated[
        bool,
        typer.Option("--debug", help="Verbose logs, exporter warnings, and tracebacks on errors."),
    ] = False,
) -> None:
    """Export a PyTorch model into the Triton model repository as a new version.

    The model is exported to ONNX (dynamic batch and dims) and checked against PyTorch on random and edge-case inputs at several batch sizes. Where TensorRT and a CUDA GPU are present it is also built into a TensorRT plan (model NAME_trt) and checked the same way. Nothing is written unless every check passes. The last line printed is the new version folder.

    Example: rayfront export rayfront.export.demos.digits:factory --name digits --input pixels:FP32:1,8,8 --output logits --output probabilities --max-batch-size 64
    """
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        from pydantic import ValidationError

        from rayfront.export.pipeline import export_model
        from rayfront.export.request import ExportRequest

        try:
            request = ExportRequest(
                model_ref=model_ref,
                name=name,
                inputs=inputs,
                outputs=outputs or [],
                max_batch_size=max_batch_size,
                repository=repository,
                tensorrt=tensorrt.value,
                fp16=fp16,
                precision=precision.value,
                fp16_atol=fp16_atol,
                fp16_rtol=fp16_rtol,
                bf16_rtol=bf16_rtol,
                trt_shapes=trt_shapes or [],
                trt_workspace_mb=trt_workspace_mb,
                atol=atol,
                rtol=rtol,
                opset=opset,
                legacy_exporter=legacy_exporter,
                torchscript=torchscript,
                preferred_batch_sizes=preferred_batch_sizes or [],
                max_queue_delay_us=max_queue_delay_us,
                instance_kind=instance_kind.value,
                instance_count=instance_count,
                version_policy=version_policy,
                parity_batch_sizes=parity_batch_sizes or [],
                seed=seed,
                reference_data=reference_data,
                debug=debug,
                progress=progress,
            )
        except ValidationError as err:
            raise _validation_error(err) from None
        result = export_model(request)
    except RayfrontError as err:
        if debug:
            traceback.print_exc()
        typer.echo(f"error: {err.message}", err=True)
        raise typer.Exit(1) from None
    worst = max((r.max_abs_err for r in result.parity), default=0.0)
    typer.echo(
        f"exported {result.model} ({result.exporter} exporter, {len(result.parity)} parity "
        f"checks passed, worst max_abs_err {worst:.3g}); {result.tensorrt_note}",
        err=True,
    )
    for model, path in result.versions.items():
        if model != result.model:
            typer.echo(str(path))
    typer.echo(str(result.version_dir))
