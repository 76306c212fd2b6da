"""Triton gRPC messages <-> rayfront's transport-neutral request/response objects.

Inputs arrive either as ``raw_input_contents`` (what tritonclient sends) or as typed
``InferTensorContents``; outputs always leave as ``raw_output_contents``, which
tritonclient reads for every datatype. Tensor bytes are converted only by
:mod:`rayfront.tensors`. Metadata dicts from the data plane (KServe v2 JSON shapes)
become protobuf messages here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import service_pb2 as pb

from rayfront import tensors
from rayfront.dtypes import to_numpy
from rayfront.errors import InvalidArgumentError
from rayfront.protocol import shared_memory as shm_ext
from rayfront.protocol.shared_memory import SharedMemoryRegistry
from rayfront.protocol.types import (
    PARAM_PRIORITY,
    PARAM_ROUTE_KEY,
    PARAM_TIMEOUT,
    InferRequest,
    InferResponse,
    RequestedOutput,
)

# Typed contents field and the numpy dtype the protobuf values are converted through.
_CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def param_value(p: Any) -> bool | int | float | str | bytes | None:
    """The Python value of an ``InferParameter`` / ``ModelRepositoryParameter`` oneof."""
    which = p.WhichOneof("parameter_choice")
    return None if which is None else getattr(p, which)


def params_from_pb(params: Any) -> dict[str, Any]:
    """A protobuf ``map<string, InferParameter>`` as a plain dict."""
    return {k: param_value(v) for k, v in params.items()}


def params_to_pb(values: dict[str, Any], target: Any) -> None:
    """Fill a protobuf ``map<string, InferParameter>`` from a dict of Python scalars."""
    for key, value in values.items():
        p = target[key]
        # bool before int: bool is an int subclass.
        if isinstance(value, bool):
            p.bool_param = value
        elif isinstance(value, int | np.integer):
            value = int(value)
            if value >= 1 << 63:
                p.uint64_param = value
            else:
                p.int64_param = value
        elif isinstance(value, float | np.floating):
            p.double_param = float(value)
        elif isinstance(value, str):
            p.string_param = value
        else:
            raise InvalidArgumentError(
                f"parameter '{key}' has type {type(value).__name__}; gRPC parameters must be "
                "bool, int, float or str"
            )


def _typed_contents(tensor: Any, model: str) -> np.ndarray:
    name = tensor.name
    dt = tensors.check_datatype_for(tensor.datatype, name=name, model=model)
    shape = tensors.check_shape(tensor.shape, name=name, model=model)
    field = _CONTENTS_FIELD.get(dt)
    if field is None:
        raise InvalidArgumentError(
            f"input '{name}' of model '{model}': {dt} has no typed contents field; send it "
            "in raw_input_contents"
        )
    values = getattr(tensor.contents, field)
    count = tensors.element_count(shape)
    if len(values) != count:
        raise InvalidArgumentError(
            f"input '{name}' of model '{model}': shape {list(shape)} needs {count} elements, "
            f"{field} has {len(values)}"
        )
    if dt == "BYTES":
        tensors.check_bytes_count(count, name=name, model=model)
        arr = np.empty(count, dtype=np.object_)
        arr[:] = list(values)
        return arr.reshape(shape)
    try:
        return np.array(values, dtype=to_numpy(dt)).reshape(shape)
    except OverflowError as exc:
        raise InvalidArgumentError(
            f"input '{name}' of model '{model}': value out of range for {dt}: {exc}"
        ) from None


def infer_request_from_pb(
    msg: Any, *, route_key: str | None = None, shm: SharedMemoryRegistry | None = None
) -> InferRequest:
    """Decode a ``ModelInferRequest``; ``route_key`` is the metadata header, if any."""
    model = msg.model_name
    if not model:
        raise InvalidArgumentError("ModelInferRequest has no model_name")
    raw = msg.raw_input_contents
    n_raw = len(raw)
    if n_raw and n_raw != len(msg.inputs):
        raise InvalidArgumentError(
            f"request to model '{model}': {n_raw} raw_input_contents for {len(msg.inputs)} "
            "inputs; give raw contents for every input or for none"
        )
    if not msg.inputs:
        raise InvalidArgumentError(f"request to model '{model}': no inputs given")
    inputs: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(msg.inputs):
        name = tensor.name
        if not name:
            raise InvalidArgumentError(f"request to model '{model}': input {i} has no name")
        if name in inputs:
            raise InvalidArgumentError(f"input '{name}' of model '{model}': given more than once")
        if shm_ext.wants_shm(tensor.parameters):
            if shm is None:
                raise shm_ext.disabled("input", name, model)
            if n_raw or tensor.HasField("contents"):
                raise InvalidArgumentError(
                    f"input '{name}' of model '{model}': has both shared memory and data"
                )
            region, offset, nbytes = shm_ext.region_args(
                params_from_pb(tensor.parameters), role="input", tensor=name, model=model
            )
            dt = tensors.check_datatype_for(tensor.datatype, name=name, model=model)
            dims = tensors.check_shape(tensor.shape, name=name, model=model)
            inputs[name] = shm.input_tensor(
                region, offset, nbytes, dt, dims, tensor=name, model=model
            )
            continue
        if n_raw:
            if tensor.HasField("contents"):
                raise InvalidArgumentError(
                    f"input '{name}' of model '{model}': has both contents and raw_input_contents"
                )
            inputs[name] = tensors.tensor_from_raw(
                tensor.datatype, tensor.shape, raw[i], name=name, model=model
            )
        else:
            inputs[name] = _typed_contents(tensor, model)

    outputs: list[RequestedOutput] | None = None
    if msg.outputs:
        outputs = []
        for out in msg.outputs:
            classes = 0
            if "classification" in out.parameters:
                value = param_value(out.parameters["classification"])
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise InvalidArgumentError(
                        f"output '{out.name}' of model '{model}': 'classification' must be a "
                        f"non-negative integer, got {value!r}"
                    )
                classes = value
            region: tuple[str, int, int] | None = None
            if shm_ext.wants_shm(out.parameters):
                if shm is None:
                    raise shm_ext.disabled("output", out.name, model)
                region = shm_ext.region_args(
                    params_from_pb(out.parameters), role="output", tensor=out.name, model=model
                )
                shm.check_output(*region, tensor=out.name, model=model)
            outputs.append(RequestedOutput(name=out.name, class_count=classes, shm=region))

    params = params_from_pb(msg.parameters)
    request = InferRequest(
        model_name=model,
        model_version=msg.model_version,
        inputs=inputs,
        id=msg.id,
        outputs=outputs,
        parameters=params,
    )
    for key in (PARAM_TIMEOUT, PARAM_PRIORITY):
        value = params.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidArgumentError(
                f"request to model '{model}': parameter '{key}' must be a non-negative "
                f"integer, got {value!r}"
            )
        if key == PARAM_TIMEOUT:
            request.timeout_us = value
        else:
            request.priority = value
    key = route_key if route_key else params.get(PARAM_ROUTE_KEY)
    if key is not None:
        request.route_key = str(key)
    return request


def infer_response_to_pb(
    response: InferResponse,
    request: InferRequest | None = None,
    shm: SharedMemoryRegistry | None = None,
) -> Any:
    """Encode ``response`` as a ``ModelInferResponse`` with ``raw_output_contents``.

    Outputs the request did not ask for are dropped; classification outputs become
    top-k BYTES, as over HTTP.
    """
    wanted = None
    if request is not None and request.outputs is not None:
        wanted = {o.name: o for o in request.outputs}
    msg = pb.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version,
        id=response.id or (request.id if request is not None else ""),
    )
    if response.parameters:
        params_to_pb(response.parameters, msg.parameters)
    raws: list[bytes] = []
    for name, arr in response.outputs.items():
        if wanted is not None:
            req = wanted.get(name)
            if req is None:
                continue
            if req.class_count:
                arr = tensors.classify(arr, req.class_count, name=name)
            if req.shm is not None and shm is not None:
                region, offset, size = req.shm
                written = shm.write_output(
                    region, offset, size, arr, tensor=name, model=response.model_name
                )
                out = msg.outputs.add(
                    name=name, datatype=tensors.datatype_of(arr, name=name), shape=arr.shape
                )
                params = {shm_ext.PARAM_REGION: region, shm_ext.PARAM_BYTE_SIZE: written}
                if offset:
                    params[shm_ext.PARAM_OFFSET] = offset
                params_to_pb(params, out.parameters)
                # tritonclient pairs outputs with raw contents by position: keep them aligned.
                raws.append(b"")
                continue
        msg.outputs.add(name=name, datatype=tensors.datatype_of(arr, name=name), shape=arr.shape)
        raws.append(tensors.raw_bytes(arr))
    msg.raw_output_contents.extend(raws)
    return msg


def server_metadata_to_pb(meta: dict[str, Any]) -> Any:
    """``{"name","version","extensions"}`` as a ``ServerMetadataResponse``."""
    return pb.ServerMetadataResponse(
        name=meta.get("name", ""),
        version=str(meta.get("version", "")),
        extensions=list(meta.get("extensions", ())),
    )


def _tensor_metadata(items: Any) -> list[Any]:
    return [
        pb.ModelMetadataResponse.TensorMetadata(
            name=t["name"], datatype=t["datatype"], shape=[int(d) for d in t["shape"]]
        )
        for t in items or ()
    ]


def model_metadata_to_pb(meta: dict[str, Any]) -> Any:
    """KServe model metadata dict as a ``ModelMetadataResponse``."""
    return pb.ModelMetadataResponse(
        name=meta.get("name", ""),
        versions=[str(v) for v in meta.get("versions", ())],
        platform=meta.get("platform", ""),
        inputs=_tensor_metadata(meta.get("inputs")),
        outputs=_tensor_metadata(meta.get("outputs")),
    )


def statistics_to_pb(stats: dict[str, Any]) -> Any:
    """Triton statistics dict (``{"model_stats": [...]}``) as a ``ModelStatisticsResponse``."""
    return json_format.ParseDict(stats, pb.ModelStatisticsResponse(), ignore_unknown_fields=True)


def repository_index_to_pb(models: list[dict[str, Any]]) -> Any:
    """``[{"name","version","state","reason"}]`` as a ``RepositoryIndexResponse``."""
    return pb.RepositoryIndexResponse(
        models=[
            pb.RepositoryIndexResponse.ModelIndex(
                name=m.get("name", ""),
                version=str(m.get("version", "")),
                state=m.get("state", ""),
                reason=m.get("reason", ""),
            )
            for m in models
        ]
    )
