"""config.pbtxt <-> ModelSpec, through Triton's own ``ModelConfig`` protobuf.

Nothing here formats or scrapes text by hand: writing goes ModelSpec -> ``ModelConfig`` ->
``google.protobuf.text_format``, reading goes the other way. So a config written by stock
Triton tooling (or by hand, as Triton's docs show) reads the same as one written here, and
what we write is exactly what a Triton server would parse.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from google.protobuf import text_format
from pydantic import ValidationError
from tritonclient.grpc import model_config_pb2

from rayfront.dtypes import from_config_enum, to_config_enum
from rayfront.errors import InvalidArgumentError, RepositoryError
from rayfront.spec import (
    PLATFORM_ONNX,
    PLATFORM_TENSORRT,
    PLATFORM_TORCHSCRIPT,
    DynamicBatching,
    InstanceGroup,
    ModelSpec,
    ModelWarmup,
    QueuePolicy,
    TensorSpec,
    VersionPolicy,
    WarmupInput,
)

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.pbtxt"

ModelConfig = model_config_pb2.ModelConfig

# Triton fills `platform` from `backend` for these backends when a config names only the
# backend (its model_config_utils auto-complete); we do the same so runtimes can key on platform.
_PLATFORM_FOR_BACKEND: dict[str, str] = {
    "onnxruntime": PLATFORM_ONNX,
    "tensorrt": PLATFORM_TENSORRT,
    "pytorch": PLATFORM_TORCHSCRIPT,
}

# Top-level ModelConfig fields the spec carries; anything else set in a parsed config is
# dropped with a warning so nobody believes e.g. sequence batching is honoured.
_SUPPORTED_FIELDS = frozenset(
    {
        "name",
        "platform",
        "backend",
        "version_policy",
        "max_batch_size",
        "input",
        "output",
        "dynamic_batching",
        "instance_group",
        "default_model_filename",
        "parameters",
        "model_warmup",
    }
)


# --- spec -> proto -----------------------------------------------------------------------


def _data_type(datatype: str) -> int:
    return model_config_pb2.DataType.Value(to_config_enum(datatype))


def spec_to_proto(spec: ModelSpec) -> model_config_pb2.ModelConfig:
    """Build Triton's ``ModelConfig`` message for ``spec``.

    Instance groups, version policy and (when batching is on) the queue policy are always
    written out explicitly: left out, stock Triton would pick its own defaults (GPU instances
    when it sees a GPU, no timeout override), and the config would mean something else there
    than it does in rayfront.
    """
    cfg = model_config_pb2.ModelConfig(
        name=spec.name,
        platform=spec.platform,
        backend=spec.backend,
        max_batch_size=spec.max_batch_size,
        default_model_filename=spec.default_model_filename,
    )
    for t in spec.inputs:
        cfg.input.add(
            name=t.name, data_type=_data_type(t.datatype), dims=list(t.dims), optional=t.optional
        )
    for t in spec.outputs:
        if t.optional:
            # ModelOutput has no `optional`; silently dropping it would break the round trip.
            raise InvalidArgumentError(
                f"output {t.name!r} of model {spec.name!r}: outputs cannot be optional"
            )
        cfg.output.add(name=t.name, data_type=_data_type(t.datatype), dims=list(t.dims))

    db = spec.dynamic_batching
    if db is not None:
        pb = cfg.dynamic_batching
        pb.SetInParent()  # an empty `dynamic_batching { }` still turns batching on
        pb.preferred_batch_size.extend(db.preferred_batch_size)
        pb.max_queue_delay_microseconds = db.max_queue_delay_microseconds
        pb.preserve_ordering = db.preserve_ordering
        pb.priority_levels = db.priority_levels
        pb.default_priority_level = db.default_priority_level
        qp = db.default_queue_policy
        pb.default_queue_policy.SetInParent()
        pb.default_queue_policy.default_timeout_microseconds = qp.default_timeout_microseconds
        pb.default_queue_policy.allow_timeout_override = qp.allow_timeout_override
        pb.default_queue_policy.max_queue_size = qp.max_queue_size

    for g in spec.instance_groups:
        cfg.instance_group.add(
            kind=model_config_pb2.ModelInstanceGroup.Kind.Value(g.kind),
            count=g.count,
            gpus=list(g.gpus),
        )

    vp = spec.version_policy
    if vp.kind == "latest":
        cfg.version_policy.latest.num_versions = vp.num_versions
    elif vp.kind == "all":
        cfg.version_policy.all.SetInParent()
    else:
        cfg.version_policy.specific.versions.extend(vp.versions)

    for key, value in spec.parameters.items():
        cfg.parameters[key].string_value = value
    for sample in spec.model_warmup:
        pw = cfg.model_warmup.add(
            name=sample.name, batch_size=sample.batch_size, count=sample.count
        )
        for input_name, wi in sample.inputs.items():
            entry = pw.inputs[input_name]
            entry.data_type = _data_type(wi.datatype)
            entry.dims.extend(wi.dims)
            if wi.source == "zero":
                entry.zero_data = True
            elif wi.source == "random":
                entry.random_data = True
            else:
                entry.input_data_file = wi.file
    return cfg


def render_config(spec: ModelSpec) -> str:
    """config.pbtxt text for ``spec`` (protobuf text format, ``dims: [-1, 3]`` style)."""
    return text_format.MessageToString(
        spec_to_proto(spec), as_utf8=True, use_short_repeated_primitives=True
    )


# --- proto -> spec -----------------------------------------------------------------------


def _datatype_name(enum_value: int, kind: str, tensor: str, model: str) -> str:
    enum_name = model_config_pb2.DataType.Name(enum_value)
    if enum_name == "TYPE_INVALID":
        raise RepositoryError(f"{kind} {tensor!r} of model {model!r}: data_type is missing")
    try:
        return from_config_enum(enum_name)
    except InvalidArgumentError:
        raise RepositoryError(
            f"{kind} {tensor!r} of model {model!r}: data_type {enum_name} is not supported by "
            "rayfront (no KServe v2 / numpy equivalent)"
        ) from None


def _version_policy(cfg: model_config_pb2.ModelConfig) -> VersionPolicy:
    which = (
        cfg.version_policy.WhichOneof("policy_choice") if cfg.HasField("version_policy") else None
    )
    if which == "all":
        return VersionPolicy(kind="all")
    if which == "specific":
        return VersionPolicy(kind="specific", versions=tuple(cfg.version_policy.specific.versions))
    if which == "latest":
        # Triton treats an unset num_versions as 1.
        return VersionPolicy(
            kind="latest", num_versions=cfg.version_policy.latest.num_versions or 1
        )
    return VersionPolicy()


def _dynamic_batching(cfg: model_config_pb2.ModelConfig) -> DynamicBatching | None:
    if not cfg.HasField("dynamic_batching"):
        return None
    pb = cfg.dynamic_batching
    # Without an explicit default_queue_policy rayfront's defaults apply (timeouts may be
    # overridden per request); spec_to_proto always writes the policy, so our own configs
    # round-trip exactly.
    queue = (
        QueuePolicy(
            default_timeout_microseconds=pb.default_queue_policy.default_timeout_microseconds,
            allow_timeout_override=pb.default_queue_policy.allow_timeout_override,
            max_queue_size=pb.default_queue_policy.max_queue_size,
        )
        if pb.HasField("default_queue_policy")
        else QueuePolicy()
    )
    return DynamicBatching(
        preferred_batch_size=tuple(pb.preferred_batch_size),
        max_queue_delay_microseconds=pb.max_queue_delay_microseconds,
        preserve_ordering=pb.preserve_ordering,
        priority_levels=pb.priority_levels,
        default_priority_level=pb.default_priority_level,
        default_queue_policy=queue,
    )


def _warn_ignored(cfg: model_config_pb2.ModelConfig, model: str) -> None:
    ignored = sorted(f.name for f, _ in cfg.ListFields() if f.name not in _SUPPORTED_FIELDS)
    ignored += [f"input[{i.name}].reshape" for i in cfg.input if i.HasField("reshape")]
    ignored += [f"output[{o.name}].reshape" for o in cfg.output if o.HasField("reshape")]
    if ignored:
        logger.warning(
            "config of model %r sets %s, which rayfront does not act on; they are ignored",
            model,
            ", ".join(ignored),
        )


def _validation_message(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        parts.append(f"{loc}: {e['msg']}" if loc else e["msg"])
    return "; ".join(parts)


def _tensor(
    model: str, kind: str, name: str, data_type: int, dims: Iterable[int], *, optional: bool = False
) -> TensorSpec:
    datatype = _datatype_name(data_type, kind, name, model)
    try:
        return TensorSpec(name=name, datatype=datatype, dims=tuple(dims), optional=optional)
    except ValidationError as err:
        raise RepositoryError(
            f"{kind} {name!r} of model {model!r}: {_validation_message(err)}"
        ) from None


def _warmup(model: str, pw: model_config_pb2.ModelWarmup) -> ModelWarmup:
    inputs: dict[str, WarmupInput] = {}
    for input_name, wi in pw.inputs.items():
        which = wi.WhichOneof("input_data_type")
        source = {"zero_data": "zero", "random_data": "random", "input_data_file": "file"}.get(
            which or "", "zero"
        )
        try:
            inputs[input_name] = WarmupInput(
                datatype=_datatype_name(wi.data_type, "warm-up input", input_name, model),
                dims=tuple(wi.dims),
                source=source,  # type: ignore[arg-type]
                file=wi.input_data_file if source == "file" else "",
            )
        except ValidationError as err:
            raise RepositoryError(
                f"model_warmup {pw.name!r} of model {model!r}, input {input_name!r}: "
                f"{_validation_message(err)}"
            ) from None
    try:
        return ModelWarmup(
            name=pw.name or "warmup", batch_size=pw.batch_size, count=pw.count or 1, inputs=inputs
        )
    except ValidationError as err:
        raise RepositoryError(
            f"model_warmup {pw.name!r} of model {model!r}: {_validation_message(err)}"
        ) from None


def proto_to_spec(cfg: model_config_pb2.ModelConfig, *, name_hint: str | None = None) -> ModelSpec:
    """The ModelSpec a ``ModelConfig`` describes (inverse of :func:`spec_to_proto`).

    A config without ``name`` takes ``name_hint`` (the model's folder name), as Triton does.
    A config naming only a known ``backend`` gets the matching ``platform``. Raises
    :class:`RepositoryError` naming the model, tensor and value when the config is unusable.
    """
    name = cfg.name or name_hint
    if not name:
        raise RepositoryError("model config has no `name` and no folder name to take it from")
    _warn_ignored(cfg, name)
    platform = cfg.platform or _PLATFORM_FOR_BACKEND.get(cfg.backend, "")
    if not platform and not cfg.backend:
        raise RepositoryError(f"model {name!r}: config names neither `platform` nor `backend`")

    inputs = tuple(
        _tensor(name, "input", i.name, i.data_type, i.dims, optional=i.optional) for i in cfg.input
    )
    outputs = tuple(_tensor(name, "output", o.name, o.data_type, o.dims) for o in cfg.output)
    groups = [
        InstanceGroup(
            kind=model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind),  # type: ignore[arg-type]
            count=g.count or 1,  # Triton's default for an unset count
            gpus=tuple(g.gpus),
        )
        for g in cfg.instance_group
    ]
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    warmup = tuple(_warmup(name, w) for w in cfg.model_warmup)
    try:
        return ModelSpec(
            name=name,
            platform=platform,
            backend=cfg.backend,
            max_batch_size=cfg.max_batch_size,
            inputs=inputs,
            outputs=outputs,
            dynamic_batching=_dynamic_batching(cfg),
            # No instance_group: keep the spec's default (one CPU instance).
            **({"instance_groups": tuple(groups)} if groups else {}),
            version_policy=_version_policy(cfg),
            parameters=params,
            default_model_filename=cfg.default_model_filename,
            model_warmup=warmup,
        )
    except ValidationError as err:
        raise RepositoryError(f"model {name!r}: {_validation_message(err)}") from None


def parse_config(text: str, *, source: str, name_hint: str | None = None) -> ModelSpec:
    """Parse config.pbtxt text; errors raise :class:`RepositoryError` naming ``source``."""
    cfg = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, cfg)
    except text_format.ParseError as err:
        raise RepositoryError(f"{source}: cannot parse model config: {err}") from None
    try:
        return proto_to_spec(cfg, name_hint=name_hint)
    except RepositoryError as err:
        raise RepositoryError(f"{source}: {err.message}") from None


def read_config(model_dir: Path) -> ModelSpec:
    """Read ``<model_dir>/config.pbtxt``; the folder name is the model name, as in Triton."""
    model_dir = Path(model_dir)
    path = model_dir / CONFIG_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RepositoryError(f"{path}: model {model_dir.name!r} has no {CONFIG_NAME}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise RepositoryError(f"{path}: cannot read model config: {err}") from None
    spec = parse_config(text, source=str(path), name_hint=model_dir.name)
    if spec.name != model_dir.name:
        # Triton refuses this too; serving under either name would surprise someone.
        raise RepositoryError(
            f"{path}: config names the model {spec.name!r} but its folder is {model_dir.name!r}; "
            "rename one so they match"
        )
    return spec
