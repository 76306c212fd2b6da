"""PyTorch -> ONNX with dynamic batch and dynamic dims.

The dynamo exporter (``torch.onnx.export(dynamo=True)``) goes first: it captures the model
with ``torch.export`` and handles control flow and modern ops best. When it fails, the
legacy TorchScript-based exporter (``dynamo=False``) gets a try and the reason for the
fallback is logged and recorded in the provenance. When both fail the export stops with
an :class:`~rayfront.errors.ExportError` naming the model and the failing op.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rayfront.errors import ExportError
from rayfront.spec import TensorSpec

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 18
BATCH_DIM_NAME = "batch"
# Inputs used to trace the graph: batch 2 and dynamic dims of 3 avoid the 0/1
# specialisation torch.export applies to sizes 0 and 1.
TRACE_BATCH = 2
TRACE_DYNAMIC_DIM = 3
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class OnnxExport:
    """The result of exporting: where the graph is and how it was made."""

    path: Path
    files: tuple[Path, ...]  # model.onnx plus its external-data file when > 2 GB
    exporter: str  # "dynamo" | "legacy"
    note: str  # why the legacy exporter was used, else ""
    opset: int
    output_names: tuple[str, ...]


def default_output_names(count: int) -> list[str]:
    """Triton's convention for unnamed outputs: ``output__0``, ``output__1``, ..."""
    return [f"output__{i}" for i in range(count)]


def example_inputs(inputs: Sequence[TensorSpec], max_batch_size: int) -> tuple[Any, ...]:
    """Small random tensors matching the specs, used to trace the model."""
    import torch

    from rayfront.dtypes import to_torch

    gen = torch.Generator().manual_seed(0)
    tensors = []
    for spec in inputs:
        shape = [TRACE_DYNAMIC_DIM if d == -1 else d for d in spec.dims]
        if max_batch_size > 0:
            # Batch 2 even when max_batch_size is 1: the graph must stay batch-generic.
            shape.insert(0, TRACE_BATCH)
        dtype = to_torch(spec.datatype)
        if dtype.is_floating_point:
            tensors.append(torch.rand(shape, generator=gen).to(dtype))
        elif dtype == torch.bool:
            tensors.append(torch.randint(0, 2, shape, generator=gen).to(torch.bool))
        else:
            # [0, 2) is valid for every integer use we can't know about: indices into
            # any embedding, masks, flags.
            tensors.append(torch.randint(0, 2, shape, generator=gen, dtype=dtype))
    return tuple(tensors)


def summarize_exception(err: BaseException) -> str:
    """One line out of an exporter's (often page-long) error message."""
    text = _ANSI.sub("", str(err))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # The dynamo exporter puts the root cause under "## Exception summary" as
    # "<class '...DispatchError'>: No ONNX function found for <OpOverload(op='x.y')>...".
    if "## Exception summary" in text:
        tail = text.split("## Exception summary", 1)[1]
        for ln in tail.splitlines():
            match = re.match(r"<class '(?:[\w.]+\.)?(\w+)'>: (.*)", ln.strip())
            if match:
                return _shorten(f"{match.group(1)}: {match.group(2)}")
    first = lines[0] if lines else ""
    return _shorten(f"{type(err).__name__}: {first}" if first else type(err).__name__)


def _shorten(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def _quiet(debug: bool) -> Iterator[None]:
    """Keep exporter chatter (progress prints, FutureWarnings, torchvision notes) off stdout.

    stdout is reserved for the CLI's result path; with --debug everything still shows on
    stderr.
    """
    import torch

    torch_onnx_logger = logging.getLogger("torch.onnx")
    old_level = torch_onnx_logger.level
    native_log = torch._C._jit_onnx_log
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        if not debug:
            warnings.simplefilter("ignore")
            torch_onnx_logger.setLevel(logging.ERROR)
            # The legacy exporter's setup_onnx_logging() tests the function object
            # `_jit_is_onnx_log_enabled` instead of calling it, so its native log is always
            # on and dumps the whole TorchScript graph to stderr on any failure. Silence
            # it for the duration of this call only.
            torch._C._jit_onnx_log = _discard
        try:
            yield
        finally:
            torch._C._jit_onnx_log = native_log
            torch_onnx_logger.setLevel(old_level)


def _discard(*_args: object) -> None:
    return None


def _dynamic_shapes(
    inputs: Sequence[TensorSpec], max_batch_size: int
) -> tuple[dict[int, Any], ...]:
    import torch

    batch = torch.export.Dim(BATCH_DIM_NAME, min=1) if max_batch_size > 0 else None
    shapes = []
    for spec in inputs:
        offset = 1 if max_batch_size > 0 else 0
        dims: dict[int, Any] = {0: batch} if batch is not None else {}
        for i, d in enumerate(spec.dims):
            if d == -1:
                # DYNAMIC (not a named Dim) lets torch.export infer equalities such as
                # input_ids and attention_mask sharing one sequence length.
                dims[i + offset] = torch.export.Dim.DYNAMIC
        shapes.append(dims)
    return tuple(shapes)


def _dynamic_axes(
    inputs: Sequence[TensorSpec], outputs: Sequence[str], max_batch_size: int
) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {}
    offset = 1 if max_batch_size > 0 else 0
    for spec in inputs:
        entry = {0: BATCH_DIM_NAME} if max_batch_size > 0 else {}
        for i, d in enumerate(spec.dims):
            if d == -1:
                entry[i + offset] = f"{spec.name}_dim{i + offset}"
        if entry:
            axes[spec.name] = entry
    if max_batch_size > 0:
        for name in outputs:
            axes[name] = {0: BATCH_DIM_NAME}
    return axes


def _unique(name: str, taken: set[str]) -> str:
    i = 0
    while f"{name}__{i}" in taken:
        i += 1
    return f"{name}__{i}"


def _rename_io(model: Any, input_names: Sequence[str], output_names: Sequence[str]) -> None:
    """Give graph inputs/outputs the requested names without clashing with inner values.

    The dynamo exporter names inner values after FX nodes (``embedding``, ``add``...);
    asking for an output called ``embedding`` through ``output_names`` then yields two
    values with one name, which ONNX Runtime rejects. Renaming the clashing inner value
    first avoids that.
    """
    graph = model.graph
    if len(graph.inputs) != len(input_names):
        raise ExportError(
            f"the exported graph has {len(graph.inputs)} inputs, expected {len(input_names)} "
            f"({', '.join(input_names)}); does forward() ignore one of them?"
        )
    values: dict[str, Any] = {}
    for v in graph.inputs:
        values[v.name] = v
    for v in graph.initializers.values():
        values[v.name] = v
    for node in graph.all_nodes():
        for v in node.outputs:
            if v.name:
                values[v.name] = v
    taken = set(values)
    for value, wanted in [
        *zip(graph.inputs, input_names, strict=True),
        *zip(graph.outputs, output_names, strict=True),
    ]:
        if value.name == wanted:
            continue
        clash = values.get(wanted)
        if clash is not None and clash is not value:
            new = _unique(wanted, taken)
            clash.name = new
            taken.add(new)
            values[new] = clash
        taken.discard(value.name)
        value.name = wanted
        taken.add(wanted)
        values[wanted] = value


def _external_data_files(path: Path) -> tuple[Path, ...]:
    """model.onnx plus any external-data files written beside it in its folder."""
    return tuple(sorted(p for p in path.parent.iterdir() if p.is_file()))


def export_onnx(
    module: Any,
    *,
    model_name: str,
    inputs: Sequence[TensorSpec],
    output_names: Sequence[str],
    max_batch_size: int,
    out_dir: Path,
    opset: int = DEFAULT_OPSET,
    debug: bool = False,
    force_legacy: bool = False,
) -> OnnxExport:
    """Export ``module`` to ``out_dir/model.onnx``; dynamo first, legacy as fallback.

    ``out_dir`` must be empty: every file in it afterwards belongs to the model (external
    data included), which is how the caller knows what to copy into the version folder.
    """
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.onnx"
    args = example_inputs(inputs, max_batch_size)
    input_names = [t.name for t in inputs]
    note = ""

    if not force_legacy:
        try:
            with _quiet(debug), torch.no_grad():
                program = torch.onnx.export(
                    module,
                    args,
                    None,
                    dynamo=True,
                    verbose=False,
                    opset_version=opset,
                    dynamic_shapes=_dynamic_shapes(inputs, max_batch_size),
                )
            _check_output_count(program.model.graph.outputs, output_names, model_name)
            _rename_io(program.model, input_names, output_names)
            with _quiet(debug):
                # save() switches to external data by itself above 2 GB of weights.
                program.save(str(path))
            logger.info(
                "exported %s to ONNX with the dynamo exporter (opset %d)", model_name, opset
            )
            return OnnxExport(
                path, _external_data_files(path), "dynamo", "", opset, tuple(output_names)
            )
        except ExportError:
            raise
        except Exception as err:  # exporter failures come in many types; summarised below
            dynamo_error = summarize_exception(err)
            note = f"dynamo exporter failed ({dynamo_error}); used the legacy exporter"
            logger.warning(
                "model %r: dynamo exporter failed (%s); trying the legacy exporter",
                model_name,
                dynamo_error,
            )
            for leftover in out_dir.iterdir():
                leftover.unlink()
    else:
        dynamo_error = "skipped"
        note = "legacy exporter requested"

    try:
        with _quiet(debug), torch.no_grad():
            torch.onnx.export(
                module,
                args,
                str(path),
                dynamo=False,
                verbose=False,
                opset_version=opset,
                input_names=input_names,
                output_names=list(output_names),
                dynamic_axes=_dynamic_axes(inputs, output_names, max_batch_size),
            )
    except Exception as err:  # both exporters failed: one line naming the op
        raise ExportError(
            f"cannot export model {model_name!r} to ONNX: dynamo exporter: {dynamo_error}; "
            f"legacy exporter: {summarize_exception(err)}"
        ) from err
    _check_legacy_outputs(path, output_names, model_name)
    logger.info("exported %s to ONNX with the legacy exporter (opset %d)", model_name, opset)
    return OnnxExport(path, _external_data_files(path), "legacy", note, opset, tuple(output_names))


def _check_output_count(graph_outputs: Sequence[Any], names: Sequence[str], model: str) -> None:
    if len(graph_outputs) != len(names):
        raise ExportError(
            f"model {model!r}: the exported graph has {len(graph_outputs)} outputs but "
            f"{len(names)} output names were given ({', '.join(names)}); pass one --output "
            "per model output, in order"
        )


def _check_legacy_outputs(path: Path, names: Sequence[str], model: str) -> None:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    _check_output_count(list(graph.output), names, model)
