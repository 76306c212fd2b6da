"""Check a model repository model by model, and say precisely what is wrong.

Checks per model: config.pbtxt parses; there are versions, and the version policy can be
met; each version has its model file; ONNX graphs agree with the config on tensor names,
dtypes and shapes; the provenance sidecar is well-formed, its file hashes still match and
its parity checks passed; TensorRT plans were built for this machine's TensorRT and GPU.

onnx, tensorrt and torch are imported only when a check needs them.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from google.protobuf.message import DecodeError
from pydantic import BaseModel, ConfigDict, Field

from rayfront.dtypes import from_onnx
from rayfront.errors import InvalidArgumentError, RayfrontError, RepositoryError
from rayfront.repository._fs import sha256_file
from rayfront.repository.layout import Repository
from rayfront.repository.sidecar import Provenance, TensorRTStamp, read_sidecar
from rayfront.spec import PLATFORM_ONNX, PLATFORM_TENSORRT, ModelSpec, TensorSpec

logger = logging.getLogger(__name__)

# ONNX TensorProto.DataLocation.EXTERNAL (numeric so the module does not import onnx).
_ONNX_EXTERNAL = 1


class Problem(BaseModel):
    """One finding about a model or one of its versions."""

    model_config = ConfigDict(extra="forbid")

    version: int | None = Field(description="Version it concerns; None for the whole model.")
    message: str = Field(description="What is wrong and, where known, how to fix it.")
    severity: Literal["error", "note"] = Field(
        default="error", description="'error' fails validation; 'note' is informational."
    )


class ModelReport(BaseModel):
    """Validation result for one model folder."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Model folder name.")
    ok: bool = Field(description="True when no problem has severity 'error'.")
    problems: list[Problem] = Field(default_factory=list, description="Errors and notes.")
    versions: list[int] = Field(default_factory=list, description="Version folders on disk.")
    platform: str = Field(default="", description="Config platform; '' if the config is unusable.")

    @property
    def errors(self) -> list[Problem]:
        """Only the problems that fail validation."""
        return [p for p in self.problems if p.severity == "error"]


# --- ONNX --------------------------------------------------------------------------------


def _fmt(shape: list[int] | tuple[int, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _graph_dims(value_info: Any) -> tuple[list[int], list[str]] | None:
    """(dims with -1 for symbolic/unknown, the symbol names) or None if the rank is unknown."""
    ttype = value_info.type.tensor_type
    if not ttype.HasField("shape"):
        return None
    dims, labels = [], []
    for d in ttype.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(d.dim_value)
            labels.append(str(d.dim_value))
        else:
            dims.append(-1)
            labels.append(repr(d.dim_param) if d.dim_param else "?")
    return dims, labels


def _compare_tensor(
    kind: str, model: str, t: TensorSpec, max_batch_size: int, value_info: Any
) -> list[str]:
    where = f"{kind} {t.name!r} of model {model!r}"
    if value_info.type.WhichOneof("value") != "tensor_type":
        return [
            f"{where}: the graph declares a non-tensor type ({value_info.type.WhichOneof('value')})"
        ]
    problems = []
    elem = value_info.type.tensor_type.elem_type
    try:
        graph_dtype = from_onnx(elem)
    except InvalidArgumentError:
        graph_dtype = f"ONNX element type {elem}"
    if graph_dtype != t.datatype:
        problems.append(f"{where}: config dtype {t.datatype}, graph {graph_dtype}")

    got = _graph_dims(value_info)
    if got is None:
        return problems  # rank unknown in the graph: nothing to compare
    gdims, glabels = got
    expected = list(t.full_shape(max_batch_size))
    if len(gdims) != len(expected):
        batch_note = " (batch dim first, from max_batch_size > 0)" if max_batch_size > 0 else ""
        problems.append(
            f"{where}: config shape {_fmt(expected)}{batch_note} has rank {len(expected)}, "
            f"graph shape [{', '.join(glabels)}] has rank {len(gdims)}"
        )
        return problems
    for i, (want, have) in enumerate(zip(expected, gdims, strict=True)):
        if want == have:
            continue
        if i == 0 and max_batch_size > 0:
            problems.append(
                f"{where}: dim 0 is the batch dim (max_batch_size {max_batch_size}) but the graph "
                f"fixes it at {have}; export with a dynamic batch dim"
            )
        elif want == -1:
            problems.append(
                f"{where}: dim {i} is dynamic (-1) in the config, fixed {have} in the graph"
            )
        elif have == -1:
            problems.append(
                f"{where}: dim {i} is fixed {want} in the config, dynamic ({glabels[i]}) in the graph"
            )
        else:
            problems.append(f"{where}: dim {i} is {want} in the config, {have} in the graph")
    return problems


def check_onnx_signature(spec: ModelSpec, onnx_path: Path) -> list[str]:
    """Differences between ``spec``'s inputs/outputs and the ONNX graph at ``onnx_path``.

    Every config tensor must exist in the graph with the same dtype and shape (the batch
    dim first and dynamic when ``max_batch_size > 0``; dynamic-vs-fixed mismatches count),
    and every graph input must be in the config, as Triton's ONNX Runtime backend demands.
    A config may list a subset of the graph's outputs. Returns [] when they agree.
    """
    import onnx

    onnx_path = Path(onnx_path)
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except OSError as err:
        return [f"{onnx_path}: cannot read ONNX graph: {err}"]
    except (DecodeError, ValueError) as err:
        return [f"{onnx_path}: not a valid ONNX file: {err}"]
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    # Old IRs list initializers among the inputs; they are weights, not model inputs.
    graph_inputs = {i.name: i for i in graph.input if i.name not in initializers}
    graph_outputs = {o.name: o for o in graph.output}

    problems: list[str] = []
    for kind, tensors, available in (
        ("input", spec.inputs, graph_inputs),
        ("output", spec.outputs, graph_outputs),
    ):
        for t in tensors:
            vi = available.get(t.name)
            if vi is None:
                problems.append(
                    f"{kind} {t.name!r} of model {spec.name!r} is not in the ONNX graph "
                    f"(graph {kind}s: {', '.join(sorted(available)) or 'none'})"
                )
                continue
            problems += _compare_tensor(kind, spec.name, t, spec.max_batch_size, vi)
    declared = {t.name for t in spec.inputs}
    problems += [
        f"graph input {name!r} of model {spec.name!r} is not declared in config.pbtxt"
        for name in graph_inputs
        if name not in declared
    ]
    problems += _missing_external_data(model, onnx_path)
    return problems


def _missing_external_data(model: Any, onnx_path: Path) -> list[str]:
    missing = set()
    for tensor in model.graph.initializer:
        if tensor.data_location != _ONNX_EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        if location and not (onnx_path.parent / location).is_file():
            missing.add(location)
    return [
        f"{onnx_path}: external weights file {name!r} is missing next to the graph"
        for name in sorted(missing)
    ]


# --- TensorRT ----------------------------------------------------------------------------


def _release(version: str) -> tuple[str, ...]:
    # Plans are tied to the TensorRT release (major.minor.patch); the 4th component is a
    # build number that does not change the plan format.
    return tuple(version.strip().split(".")[:3])


def check_plan_stamp(
    stamp: TensorRTStamp | None, current_trt: str | None, current_cc: str | None
) -> str | None:
    """A problem message when a plan cannot run here, or None when it can (or cannot be told).

    ``current_trt``/``current_cc`` are this machine's TensorRT version and GPU compute
    capability; None means unknown, and that part is not compared. A plan without a stamp
    is always a problem: nothing says where it can run.
    """
    if stamp is None:
        return (
            "unstamped plan: its rayfront.json records no TensorRT version or compute "
            "capability, so it cannot be checked against this machine; rebuild it with "
            "`rayfront export`"
        )
    wrong = []
    if current_trt is not None and _release(current_trt) != _release(stamp.tensorrt_version):
        wrong.append(f"TensorRT {current_trt}")
    if current_cc is not None and current_cc.strip() != stamp.compute_capability:
        wrong.append(f"compute capability {current_cc}")
    if not wrong:
        return None
    return (
        f"TensorRT plan was built with TensorRT {stamp.tensorrt_version} for compute capability "
        f"{stamp.compute_capability} ({stamp.gpu_name}), but this machine has "
        f"{' and '.join(wrong)}; rebuild the plan on this machine with `rayfront export`"
    )


@functools.cache
def local_tensorrt_version() -> str | None:
    """``tensorrt.__version__`` if TensorRT is importable here, else None."""
    if importlib.util.find_spec("tensorrt") is None:
        return None
    try:
        import tensorrt
    except (ImportError, OSError, RuntimeError) as err:
        logger.info("tensorrt is installed but does not import: %s", err)
        return None
    return str(getattr(tensorrt, "__version__", "")) or None


@functools.cache
def local_compute_capability() -> str | None:
    """Compute capability of CUDA device 0 as 'major.minor', or None without a CUDA GPU."""
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability()
    return f"{major}.{minor}"


def _plan_problems(
    version: int, prov: Provenance | None, current_trt: str | None, current_cc: str | None
) -> list[Problem]:
    stamp = prov.tensorrt if prov is not None else None
    problems = []
    message = check_plan_stamp(stamp, current_trt, current_cc)
    if message is not None:
        problems.append(Problem(version=version, message=message))
    if stamp is not None and (current_trt is None or current_cc is None):
        missing = " and ".join(
            n for n, v in (("TensorRT", current_trt), ("GPU", current_cc)) if v is None
        )
        problems.append(
            Problem(
                version=version,
                severity="note",
                message=(
                    f"plan cannot be verified here (no {missing}): stamped for TensorRT "
                    f"{stamp.tensorrt_version} on compute capability {stamp.compute_capability}"
                ),
            )
        )
    return problems


# --- per-version and per-model checks ------------------------------------------------------


def _sidecar_problems(version: int, vdir: Path, prov: Provenance) -> list[Problem]:
    problems = [
        Problem(version=version, message=f"parity failed: {r.describe()}")
        for r in prov.parity
        if not r.passed
    ]
    for name, digest in sorted(prov.files.items()):
        path = vdir / name
        if not path.is_file():
            problems.append(
                Problem(version=version, message=f"{name}: listed in rayfront.json but missing")
            )
        elif sha256_file(path) != digest:
            problems.append(
                Problem(
                    version=version,
                    message=f"{name}: sha256 differs from rayfront.json (changed after export)",
                )
            )
    return problems


def _version_problems(
    repo: Repository, spec: ModelSpec, version: int, env: dict[str, str | None]
) -> list[Problem]:
    vdir = repo.version_dir(spec.name, version)
    problems: list[Problem] = []
    try:
        prov = read_sidecar(vdir)
    except RepositoryError as err:
        prov = None
        problems.append(Problem(version=version, message=err.message))
    else:
        if prov is None:
            problems.append(
                Problem(
                    version=version,
                    severity="note",
                    message="no rayfront.json sidecar: provenance and parity unknown",
                )
            )
        else:
            problems += _sidecar_problems(version, vdir, prov)

    model_file = vdir / spec.model_filename
    if not model_file.is_file():
        problems.append(
            Problem(
                version=version,
                message=f"model file {spec.model_filename!r} is missing from {vdir} "
                f"(platform {spec.platform or spec.backend} loads that name)",
            )
        )
        return problems
    if spec.platform == PLATFORM_ONNX:
        problems += [
            Problem(version=version, message=m) for m in check_onnx_signature(spec, model_file)
        ]
    elif spec.platform == PLATFORM_TENSORRT:
        if "trt" not in env:
            env["trt"] = local_tensorrt_version()
            env["cc"] = local_compute_capability()
        problems += _plan_problems(version, prov, env["trt"], env["cc"])
    return problems


#: Loads one version as ``rayfront serve`` would on this host; raises when it cannot.
LoadCheck = Callable[[ModelSpec, Path, int], None]


def validate_model(
    repo: Repository,
    name: str,
    env: dict[str, str | None] | None = None,
    load_check: LoadCheck | None = None,
) -> ModelReport:
    """Validate one model folder of ``repo``; with ``load_check``, load its served versions."""
    env = {} if env is None else env
    versions = repo.versions(name)
    try:
        spec = repo.spec(name)
    except RepositoryError as err:
        return ModelReport(
            name=name,
            ok=False,
            problems=[Problem(version=None, message=err.message)],
            versions=versions,
        )
    problems: list[Problem] = []
    if not versions:
        problems.append(
            Problem(version=None, message=f"no version folders (e.g. {repo.model_dir(name)}/1)")
        )
    elif spec.version_policy.kind == "specific":
        problems += [
            Problem(
                version=v,
                message=f"version_policy names version {v}, which has no folder",
            )
            for v in spec.version_policy.versions
            if v not in versions
        ]
    served = set(repo.served_versions(name, spec)) if versions else set()
    for v in versions:
        try:
            found = _version_problems(repo, spec, v, env)
        except RayfrontError as err:
            found = [Problem(version=v, message=err.message)]
        problems += found
        if load_check is not None and v in served and not any(p.severity == "error" for p in found):
            problems += _load_problems(load_check, spec, repo.version_dir(name, v), v)
    ok = not any(p.severity == "error" for p in problems)
    return ModelReport(
        name=name, ok=ok, problems=problems, versions=versions, platform=spec.platform
    )


def _load_problems(load_check: LoadCheck, spec: ModelSpec, vdir: Path, v: int) -> list[Problem]:
    try:
        load_check(spec, vdir, v)
    except RayfrontError as err:
        return [Problem(version=v, message=f"rayfront serve cannot load it here: {err.message}")]
    except Exception as err:  # the runtime's own failure: what the replica would hit
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return [
            Problem(
                version=v,
                message=f"rayfront serve cannot load it here: {type(err).__name__}: {first}",
            )
        ]
    return []


def validate_repository(root: Path, load_check: LoadCheck | None = None) -> list[ModelReport]:
    """Validate every model in the repository at ``root`` (which must exist).

    With ``load_check`` every served version is also loaded the way a replica loads it,
    so a model that passes here is one ``rayfront serve`` can load on this host.
    """
    repo = Repository(Path(root)).require()
    env: dict[str, str | None] = {}  # probe TensorRT / the GPU once, and only if a plan exists
    reports = [validate_model(repo, name, env, load_check) for name in repo.models()]
    for r in reports:
        logger.info("model %r: %s (%d problems)", r.name, "ok" if r.ok else "FAILED", len(r.errors))
    return reports
