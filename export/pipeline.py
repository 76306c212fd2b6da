"""``export_model``: load -> ONNX -> parity -> (TensorRT) -> (TorchScript) -> repository.

Everything is built and checked in a temporary work folder; the repository is written only
after every artifact passed its parity check, through the repository writer's atomic
publish. A failure anywhere leaves the repository exactly as it was.

One model, one platform, as Triton has it: the ONNX graph becomes model ``NAME``
(``onnxruntime_onnx``), a TensorRT plan becomes the sibling model ``NAME_trt``
(``tensorrt_plan``, ``KIND_GPU``), and with ``--torchscript`` a TorchScript file becomes
``NAME_torchscript`` (``pytorch_libtorch``). Each sibling keeps the same tensor names and
numbers its versions on its own.
"""

from __future__ import annotations

import logging
import platform
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from rayfront.errors import ExportError, SignatureMismatchError
from rayfront.export.loader import LoadedModel, load_model
from rayfront.export.onnx_export import (
    OnnxExport,
    default_output_names,
    example_inputs,
    export_onnx,
)
from rayfront.export.parity import (
    check_parity,
    flatten_outputs,
    make_cases,
    onnxruntime_runner,
    torch_runner,
)
from rayfront.export.progress import Steps
from rayfront.export.reference import reference_profile
from rayfront.export.request import ExportRequest
from rayfront.export.specs import OutputSpec
from rayfront.export.tensorrt import Profile, compute_profiles, tensorrt_status
from rayfront.repository.layout import Repository
from rayfront.repository.sidecar import ParityRecord, Provenance, TensorRTStamp
from rayfront.spec import (
    PLATFORM_ONNX,
    PLATFORM_TENSORRT,
    PLATFORM_TORCHSCRIPT,
    DynamicBatching,
    InstanceGroup,
    ModelSpec,
    TensorSpec,
)

logger = logging.getLogger(__name__)

__all__ = ["ExportRequest", "ExportResult", "export_model"]


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote: one version folder per model, plus what was checked."""

    model: str
    version_dir: Path  # the ONNX model's new version
    versions: dict[str, Path]  # every written model -> its new version folder
    parity: list[ParityRecord]
    exporter: str
    exporter_note: str
    tensorrt_note: str  # "built ..." or why it was skipped
    outputs: tuple[TensorSpec, ...] = field(default=())


@dataclass
class _Artifact:
    spec: ModelSpec
    files: dict[str, Path]
    provenance: Provenance


# --- outputs -------------------------------------------------------------------------------


def _graph_output_dims(path: Path, max_batch_size: int) -> dict[str, tuple[int, ...] | None]:
    """Per-request dims of each ONNX graph output (-1 where the graph has no fixed size)."""
    import onnx

    dims: dict[str, tuple[int, ...] | None] = {}
    for out in onnx.load(str(path), load_external_data=False).graph.output:
        tensor_type = out.type.tensor_type
        if not tensor_type.HasField("shape"):
            dims[out.name] = None
            continue
        full = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim)
        dims[out.name] = full[1:] if max_batch_size > 0 else full
    return dims


def _resolve_outputs(
    model_name: str,
    requested: Sequence[OutputSpec],
    names: Sequence[str],
    references: Sequence[Mapping[str, np.ndarray]],
    graph_dims: Mapping[str, tuple[int, ...] | None],
    max_batch_size: int,
) -> tuple[TensorSpec, ...]:
    """Output TensorSpecs from what PyTorch returned on the parity cases and the ONNX graph.

    The datatype is PyTorch's. A dim is dynamic (-1) when the graph leaves it symbolic or
    when its size varied across the cases; otherwise it is the observed size. A user's
    ``--output NAME:DTYPE:SHAPE`` must agree (a -1 on either side matches anything).
    """
    from rayfront.dtypes import from_numpy

    given = {o.name: o for o in requested}
    skip = 1 if max_batch_size > 0 else 0
    specs = []
    for name in names:
        shapes = [tuple(ref[name].shape) for ref in references]
        datatype = from_numpy(references[0][name].dtype)
        rank = len(shapes[0]) - skip
        if rank < 1:
            raise ExportError(
                f"model {model_name!r}: output {name!r} has shape {list(shapes[0])}; with "
                f"--max-batch-size {max_batch_size} every output needs "
                + ("a batch dim plus at least one more dim" if skip else "at least one dim")
                + " (return e.g. x.unsqueeze(-1))"
            )
        graph = graph_dims.get(name)
        if graph is None or len(graph) != rank:
            graph = (0,) * rank  # unknown: decide from the observed shapes alone
        dims = tuple(
            -1 if graph[i] == -1 or len({s[i + skip] for s in shapes}) > 1 else shapes[0][i + skip]
            for i in range(rank)
        )
        user = given.get(name)
        if user is not None and user.datatype is not None and user.datatype != datatype:
            raise ExportError(
                f"model {model_name!r}: output {name!r} is {datatype}, but --output says "
                f"{user.datatype}"
            )
        if user is not None and user.dims is not None:
            ok = len(user.dims) == len(dims) and all(
                u == g or -1 in (u, g) for u, g in zip(user.dims, dims, strict=True)
            )
            if not ok:
                raise ExportError(
                    f"model {model_name!r}: output {name!r} has dims {list(dims)} (batch dim "
                    f"excluded), but --output says {list(user.dims)}"
                )
            dims = user.dims
        specs.append(TensorSpec(name=name, datatype=datatype, dims=dims))
    return tuple(specs)


def _run_example(loaded: LoadedModel, request: ExportRequest) -> tuple[tuple[Any, ...], list[Any]]:
    """Run the model once on example inputs: a wrong --input fails here with a clear
    message, and the result tells how many outputs there are."""
    import torch

    args = example_inputs(request.inputs, request.max_batch_size)
    try:
        with torch.no_grad():
            result = loaded.module(*args)
    except Exception as err:  # the user's forward() rejecting our inputs
        shapes = ", ".join(
            f"{t.name}:{t.datatype}{list(a.shape)}"
            for t, a in zip(request.inputs, args, strict=True)
        )
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ExportError(
            f"model {request.name!r}: forward() fails on example inputs ({shapes}): "
            f"{type(err).__name__}: {first}; check --input names, order, dtypes and shapes"
        ) from err
    return args, flatten_outputs(result, model_name=request.name)


# --- specs and provenance ----------------------------------------------------------------


def _model_spec(
    request: ExportRequest,
    name: str,
    platform_name: str,
    outputs: tuple[TensorSpec, ...],
    *,
    kind: str,
    parameters: Mapping[str, str] | None = None,
) -> ModelSpec:
    batching = (
        DynamicBatching(
            preferred_batch_size=request.effective_preferred_batch_sizes,
            max_queue_delay_microseconds=request.max_queue_delay_us,
        )
        if request.max_batch_size > 0
        else None
    )
    return ModelSpec(
        name=name,
        platform=platform_name,
        max_batch_size=request.max_batch_size,
        inputs=request.inputs,
        outputs=outputs,
        dynamic_batching=batching,
        instance_groups=(InstanceGroup(kind=kind, count=request.instance_count),),
        version_policy=request.version_policy,
        parameters=dict(parameters or {}),
    )


def _library_versions(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    from rayfront import __version__ as rayfront_version

    versions = {
        "rayfront": rayfront_version,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
    }
    versions.update(extra or {})
    return versions


def _provenance(
    request: ExportRequest,
    loaded: LoadedModel,
    onnx_export: OnnxExport,
    parity: list[ParityRecord],
    *,
    exporter: str | None = None,
    note: str = "",
    opset: int | None = None,
    tensorrt: TensorRTStamp | None = None,
    versions: Mapping[str, str] | None = None,
) -> Provenance:
    return Provenance(
        source=request.model_ref,
        created_at=datetime.now(UTC),
        exporter=exporter or onnx_export.exporter,
        exporter_note=note,
        opset=opset,
        versions=_library_versions(versions),
        parity=parity,
        tensorrt=tensorrt,
        extra={**loaded.provenance_extra, **request.provenance_extra},
    )


def _precheck_signatures(repo: Repository, artifacts: Sequence[_Artifact]) -> None:
    """Refuse before writing anything if any target model has another signature.

    The writer checks each model too, but only as it writes it; checking all targets first
    keeps "ONNX written, TensorRT refused" from happening.
    """
    from rayfront.repository.writer import signature_differences

    for art in artifacts:
        if (
            not repo.has_model(art.spec.name)
            or not (repo.model_dir(art.spec.name) / "config.pbtxt").is_file()
        ):
            continue
        diffs = signature_differences(repo.spec(art.spec.name), art.spec)
        if diffs:
            raise SignatureMismatchError(
                f"model {art.spec.name!r} in {repo.root} has another signature: "
                + "; ".join(diffs)
                + ". Export under a new --name, or remove the old model first."
            )


# --- the pipeline ----------------------------------------------------------------------------


def _tensorrt_plan(request: ExportRequest) -> tuple[bool, str, dict[str, Profile]]:
    """Decide on TensorRT up front so a missing --trt-shape fails before any work."""
    if request.tensorrt == "off":
        return False, "TensorRT skipped: --tensorrt off", {}
    available, reason = tensorrt_status()
    if not available:
        if request.tensorrt == "on":
            raise ExportError(f"--tensorrt on, but TensorRT cannot be used here: {reason}")
        return False, f"TensorRT skipped: {reason}", {}
    overrides = {r.name: r for r in request.trt_shapes}
    profiles = compute_profiles(
        request.inputs, request.max_batch_size, request.effective_preferred_batch_sizes, overrides
    )
    return True, f"TensorRT plan built with {reason}", profiles


def export_model(request: ExportRequest) -> ExportResult:
    """Export, check and publish one PyTorch model; see the module docstring."""
    repo = Repository(request.repository)  # a file here fails now, before any work
    build_trt, trt_note, profiles = _tensorrt_plan(request)
    if not build_trt:
        logger.info("model %s: %s", request.name, trt_note)
    input_names = [t.name for t in request.inputs]

    with Steps(enabled=request.progress) as steps:
        with steps.step(f"load {request.model_ref}"):
            loaded = load_model(request.model_ref)
            args, sample = _run_example(loaded, request)
        names = [o.name for o in request.outputs] or default_output_names(len(sample))
        if len(names) != len(sample):
            raise ExportError(
                f"model {request.name!r} returns {len(sample)} outputs, but {len(names)} "
                f"--output names were given ({', '.join(names)})"
            )

        with tempfile.TemporaryDirectory(prefix="rayfront-export-") as tmp:
            work = Path(tmp)
            with steps.step("export ONNX"):
                onnx_export = export_onnx(
                    loaded.module,
                    model_name=request.name,
                    inputs=request.inputs,
                    output_names=names,
                    max_batch_size=request.max_batch_size,
                    out_dir=work / "onnx",
                    opset=request.opset,
                    debug=request.debug,
                    force_legacy=request.legacy_exporter,
                )

            ranges = {r.name: (r.min, r.max) for r in request.trt_shapes}
            cases = make_cases(
                request.inputs,
                request.max_batch_size,
                batch_sizes=request.parity_batch_sizes,
                generators=loaded.input_generators,
                dynamic_ranges=ranges,
                seed=request.seed,
            )
            reference = torch_runner(loaded.module, input_names, names, model_name=request.name)
            with steps.step("PyTorch reference", total=len(cases)) as step:
                references = []
                for case in cases:
                    references.append(_reference(reference, case, request.name))
                    step.advance()
            outputs = _resolve_outputs(
                request.name,
                request.outputs,
                names,
                references,
                _graph_output_dims(onnx_export.path, request.max_batch_size),
                request.max_batch_size,
            )

            def parity(
                fmt: str, runner: Any, atol: float, rtol: float, precision: str = "fp32"
            ) -> list[ParityRecord]:
                label = fmt if precision == "fp32" else f"{fmt} {precision}"
                with steps.step(f"{label} parity", total=len(cases)) as step:
                    return check_parity(
                        model_name=request.name,
                        fmt=fmt,  # type: ignore[arg-type]
                        candidate=_counting(runner, step),
                        cases=cases,
                        references=references,
                        output_names=names,
                        atol=atol,
                        rtol=rtol,
                        precision=precision,
                    )

            with steps.step("reference profile"):
                profile = reference_profile(request, reference, cases, references, names)
            onnx_parity = parity(
                "onnx", onnxruntime_runner(str(onnx_export.path), names), request.atol, request.rtol
            )
            artifacts = [
                _Artifact(
                    _model_spec(request, request.name, PLATFORM_ONNX, outputs, kind=_kind(request)),
                    {
                        **{p.name: p for p in onnx_export.files},
                        **request.extra_files,
                    },
                    _provenance(
                        request,
                        loaded,
                        onnx_export,
                        onnx_parity,
                        note=onnx_export.note,
                        opset=onnx_export.opset,
                    ),
                )
            ]

            if build_trt:
                artifacts.append(
                    _tensorrt_artifact(
                        request, loaded, onnx_export, outputs, profiles, work, steps, parity
                    )
                )
            if request.torchscript:
                artifacts.append(
                    _torchscript_artifact(
                        request, loaded, onnx_export, outputs, args, work, steps, parity
                    )
                )

            for art in artifacts:  # every format serves the same data: one reference
                art.provenance = art.provenance.model_copy(update={"reference": profile})
            _precheck_signatures(repo, artifacts)
            written: dict[str, Path] = {}
            with steps.step("write repository", total=len(artifacts)) as step:
                from rayfront.repository.writer import write_version

                for art in artifacts:
                    written[art.spec.name] = write_version(
                        request.repository, art.spec, art.files, art.provenance
                    )
                    step.advance()

    all_parity = [r for art in artifacts for r in art.provenance.parity]
    return ExportResult(
        model=request.name,
        version_dir=written[request.name],
        versions=written,
        parity=all_parity,
        exporter=onnx_export.exporter,
        exporter_note=onnx_export.note,
        tensorrt_note=trt_note,
        outputs=outputs,
    )


def _reference(runner: Any, case: Any, model_name: str) -> Mapping[str, np.ndarray]:
    try:
        return runner(case.feeds)
    except ExportError:
        raise
    except Exception as err:  # the user's forward() failing on a parity input
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in case.feeds.items())
        raise ExportError(
            f"model {model_name!r}: PyTorch forward() fails on parity case {case.case!r} at "
            f"batch {case.batch_size} ({shapes}): {type(err).__name__}: {first}"
        ) from err


def _kind(request: ExportRequest) -> str:
    return "KIND_GPU" if request.instance_kind == "gpu" else "KIND_CPU"


def _counting(runner: Any, step: Any) -> Any:
    def run(feeds: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        try:
            return runner(feeds)
        finally:
            step.advance()

    return run


def _tensorrt_artifact(
    request: ExportRequest,
    loaded: LoadedModel,
    onnx_export: OnnxExport,
    outputs: tuple[TensorSpec, ...],
    profiles: Mapping[str, Profile],
    work: Path,
    steps: Steps,
    parity: Any,
) -> _Artifact:
    from rayfront.export.tensorrt import TensorRTRunner, build_plan

    plan = work / "model.plan"
    with steps.step("build TensorRT plan"):
        stamp = build_plan(
            onnx_export.path,
            plan,
            model_name=request.name,
            profiles=profiles,
            fp16=request.trt_fp16,
            bf16=request.precision == "bf16",
            workspace_mb=request.trt_workspace_mb,
        )
    # A plan allowed FP16/BF16 kernels may pick them anywhere; judge it at that precision.
    precision = "bf16" if request.precision == "bf16" else "fp16" if request.trt_fp16 else "fp32"
    atol, rtol = request.reduced_tolerance(precision)
    records = parity(
        "tensorrt", TensorRTRunner(plan, [o.name for o in outputs]), atol, rtol, precision
    )
    return _Artifact(
        _model_spec(request, request.trt_name, PLATFORM_TENSORRT, outputs, kind="KIND_GPU"),
        {"model.plan": plan},
        _provenance(
            request,
            loaded,
            onnx_export,
            records,
            note=f"TensorRT plan built from the {onnx_export.exporter}-exported ONNX graph",
            opset=onnx_export.opset,
            tensorrt=stamp,
            versions={"tensorrt": stamp.tensorrt_version},
        ),
    )


def _torchscript_artifact(
    request: ExportRequest,
    loaded: LoadedModel,
    onnx_export: OnnxExport,
    outputs: tuple[TensorSpec, ...],
    args: tuple[Any, ...],
    work: Path,
    steps: Steps,
    parity: Any,
) -> _Artifact:
    from rayfront.export.torchscript import (
        PRECISION_PARAM,
        export_torchscript,
        order_parameters,
        torchscript_runner,
    )

    input_names = [t.name for t in request.inputs]
    output_names = [o.name for o in outputs]
    path = work / "model.pt"
    with steps.step("trace TorchScript"):
        export_torchscript(loaded.module, args, path, model_name=request.name)
    # Checked in the precision it will serve in (on the CPU here, which computes FP16 and
    # BF16 too), so the tolerance on record is the one the GPU model is held to.
    atol, rtol = request.reduced_tolerance(request.precision)
    records = parity(
        "torchscript",
        torchscript_runner(path, input_names, output_names, precision=request.precision),
        atol,
        rtol,
        request.precision,
    )
    parameters = order_parameters(input_names, output_names)
    if request.precision != "fp32":
        parameters[PRECISION_PARAM] = request.precision
    return _Artifact(
        _model_spec(
            request,
            request.torchscript_name,
            PLATFORM_TORCHSCRIPT,
            outputs,
            kind=_kind(request),
            parameters=parameters,
        ),
        {"model.pt": path},
        _provenance(
            request,
            loaded,
            onnx_export,
            records,
            exporter="torchscript",
            note="torch.jit.trace"
            + ("" if request.precision == "fp32" else f", computes in {request.precision}"),
        ),
    )
