"""Triton's HTTP flavour of KServe v2: request bodies in, response bodies out.

Handles the JSON form and Triton's binary tensor extension (``Inference-Header-Content-Length``
plus per-tensor ``binary_data_size``), gzip/deflate bodies both ways, and the error body.
Tensor bytes are converted only by :mod:`rayfront.tensors`; this module deals in
JSON structure and byte offsets, slicing the body with ``memoryview`` so binary inputs are
never copied.
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from rayfront import tensors
from rayfront.errors import InvalidArgumentError, PayloadTooLargeError, client_message, status_for
from rayfront.protocol import shared_memory as shm_ext
from rayfront.protocol.shared_memory import SharedMemoryRegistry
from rayfront.protocol.types import (
    PARAM_BINARY_OUTPUT,
    PARAM_PRIORITY,
    PARAM_ROUTE_KEY,
    PARAM_TIMEOUT,
    InferRequest,
    InferResponse,
    RequestedOutput,
)

HEADER_LENGTH = "inference-header-content-length"
ROUTE_KEY_HEADER = PARAM_ROUTE_KEY
JSON_CONTENT_TYPE = b"application/json"
BINARY_CONTENT_TYPE = b"application/octet-stream"

_DUMPS_OPTS = orjson.OPT_SERIALIZE_NUMPY
# zlib window bits: gzip wrapper, zlib wrapper (what tritonclient's "deflate" sends), raw.
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
_CHUNK = 1 << 20
#: Largest JSON part of an infer request (the whole body without the binary extension).
DEFAULT_MAX_JSON_BYTES = 8 * 1024 * 1024


def _where(name: str, model: str) -> str:
    return f"input '{name}' of model '{model}'"


def parse_header_length(value: str | None) -> int | None:
    """The ``Inference-Header-Content-Length`` header as an int, or None when absent."""
    if value is None:
        return None
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise InvalidArgumentError(
            f"Inference-Header-Content-Length must be a non-negative integer, got {value!r}"
        )
    return n


def decompress(body: bytes, encoding: str, *, max_bytes: int) -> bytes:
    """Inflate a gzip/deflate request body, refusing output beyond ``max_bytes``.

    Inflating in bounded steps means a small compressed bomb cannot allocate more than
    the cap before it is rejected.
    """
    enc = encoding.strip().lower()
    if enc in ("", "identity"):
        return body
    wbits = _WBITS.get(enc)
    if wbits is None:
        raise InvalidArgumentError(
            f"unsupported Content-Encoding {encoding!r}; expected gzip, deflate or identity"
        )
    try:
        return _inflate(body, wbits, max_bytes)
    except zlib.error as exc:
        if enc == "deflate":
            # Some clients send raw deflate (no zlib header) under "deflate".
            try:
                return _inflate(body, -zlib.MAX_WBITS, max_bytes)
            except zlib.error:
                pass
        raise InvalidArgumentError(f"request body is not valid {enc} data: {exc}") from None


def _inflate(body: bytes, wbits: int, max_bytes: int) -> bytes:
    d = zlib.decompressobj(wbits)
    parts: list[bytes] = []
    total = 0
    data = body
    while True:
        chunk = d.decompress(data, _CHUNK)
        total += len(chunk)
        if total > max_bytes:
            raise PayloadTooLargeError(
                f"decompressed request body exceeds the {max_bytes}-byte limit"
            )
        parts.append(chunk)
        data = d.unconsumed_tail
        if not data:
            break
    tail = d.flush()
    total += len(tail)
    if total > max_bytes:
        raise PayloadTooLargeError(f"decompressed request body exceeds the {max_bytes}-byte limit")
    parts.append(tail)
    if not d.eof:
        raise zlib.error("truncated stream")
    return b"".join(parts)


def compress(body: bytes, accept_encoding: str | None) -> tuple[bytes, str | None]:
    """Compress ``body`` as the client's ``Accept-Encoding`` asks (gzip preferred)."""
    if not accept_encoding:
        return body, None
    offered = set()
    for token in accept_encoding.lower().split(","):
        coding, _, q = token.strip().partition(";")
        if q.strip().replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000"):
            continue
        offered.add(coding.strip())
    for enc in ("gzip", "deflate"):
        if enc in offered:
            c = zlib.compressobj(wbits=_WBITS[enc])
            return c.compress(body) + c.flush(), enc
    return body, None


def _param_int(params: dict[str, Any], key: str, model: str) -> int | None:
    value = params.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgumentError(
            f"request to model '{model}': parameter '{key}' must be a non-negative integer, "
            f"got {value!r}"
        )
    return value


def request_parameters(
    params: dict[str, Any], request: InferRequest, route_key: str | None
) -> None:
    """Apply the request-level parameters rayfront acts on to ``request``."""
    model = request.model_name
    binary = params.get(PARAM_BINARY_OUTPUT)
    if binary is not None:
        if not isinstance(binary, bool):
            raise InvalidArgumentError(
                f"request to model '{model}': parameter '{PARAM_BINARY_OUTPUT}' must be a "
                f"boolean, got {binary!r}"
            )
        request.binary_output_default = binary
    request.timeout_us = _param_int(params, PARAM_TIMEOUT, model)
    request.priority = _param_int(params, PARAM_PRIORITY, model) or 0
    key = route_key if route_key else params.get(PARAM_ROUTE_KEY)
    if key is not None:
        request.route_key = str(key)


def _requested_outputs(
    raw: Any, model: str, shm: SharedMemoryRegistry | None = None
) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InvalidArgumentError(
            f"request to model '{model}': 'outputs' must be a list, got {type(raw).__name__}"
        )
    out: list[RequestedOutput] = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidArgumentError(
                f"request to model '{model}': each entry of 'outputs' needs a string 'name', "
                f"got {item!r}"
            )
        name = item["name"]
        params = item.get("parameters") or {}
        if not isinstance(params, dict):
            raise InvalidArgumentError(
                f"output '{name}' of model '{model}': 'parameters' must be an object"
            )
        region: tuple[str, int, int] | None = None
        if shm_ext.wants_shm(params):
            if shm is None:
                raise shm_ext.disabled("output", name, model)
            region = shm_ext.region_args(params, role="output", tensor=name, model=model)
            shm.check_output(*region, tensor=name, model=model)
        binary = params.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise InvalidArgumentError(
                f"output '{name}' of model '{model}': 'binary_data' must be a boolean, "
                f"got {binary!r}"
            )
        classes = params.get("classification", 0)
        if isinstance(classes, bool) or not isinstance(classes, int) or classes < 0:
            raise InvalidArgumentError(
                f"output '{name}' of model '{model}': 'classification' must be a "
                f"non-negative integer, got {classes!r}"
            )
        out.append(RequestedOutput(name=name, binary=binary, class_count=classes, shm=region))
    return out


def decode_infer_request(
    body: bytes,
    *,
    model_name: str,
    model_version: str = "",
    header_length: int | None = None,
    route_key: str | None = None,
    shm: SharedMemoryRegistry | None = None,
    max_json_bytes: int = DEFAULT_MAX_JSON_BYTES,
) -> InferRequest:
    """Decode an (already decompressed) infer body into an :class:`InferRequest`.

    ``header_length`` is the ``Inference-Header-Content-Length`` value: the JSON header is
    ``body[:header_length]`` and the binary inputs follow it back to back, in input order.
    """
    view = memoryview(body)
    size = len(view)
    if header_length is not None and header_length > size:
        raise InvalidArgumentError(
            f"request to model '{model_name}': Inference-Header-Content-Length "
            f"{header_length} exceeds the body size {size}"
        )
    header = view if header_length is None else view[:header_length]
    if len(header) > max_json_bytes:
        # Parsed JSON costs ~30x its text in Python objects: cap it before parsing.
        raise PayloadTooLargeError(
            f"request to model '{model_name}': its JSON is {len(header)} bytes, over the "
            f"{max_json_bytes}-byte limit for JSON; send large tensors as binary data "
            "(binary_data_size, Inference-Header-Content-Length) or in shared memory"
        )
    try:
        doc = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgumentError(
            f"request to model '{model_name}': body is not valid JSON: {exc}"
        ) from None
    if not isinstance(doc, dict):
        raise InvalidArgumentError(
            f"request to model '{model_name}': body must be a JSON object, got {type(doc).__name__}"
        )
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidArgumentError(
            f"request to model '{model_name}': 'inputs' must be a non-empty list"
        )
    req_id = doc.get("id", "")
    if not isinstance(req_id, str):
        raise InvalidArgumentError(
            f"request to model '{model_name}': 'id' must be a string, got {req_id!r}"
        )
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidArgumentError(
            f"request to model '{model_name}': 'parameters' must be an object"
        )

    inputs = {}
    offset = header_length or 0
    for item in raw_inputs:
        if not isinstance(item, dict):
            raise InvalidArgumentError(
                f"request to model '{model_name}': each input must be an object, got {item!r}"
            )
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"request to model '{model_name}': an input has no 'name'")
        if name in inputs:
            raise InvalidArgumentError(f"{_where(name, model_name)}: given more than once")
        datatype = item.get("datatype")
        shape = item.get("shape")
        if datatype is None or shape is None:
            missing = "datatype" if datatype is None else "shape"
            raise InvalidArgumentError(f"{_where(name, model_name)}: missing '{missing}'")
        in_params = item.get("parameters") or {}
        if not isinstance(in_params, dict):
            raise InvalidArgumentError(
                f"{_where(name, model_name)}: 'parameters' must be an object"
            )
        if shm_ext.wants_shm(in_params):
            if shm is None:
                raise shm_ext.disabled("input", name, model_name)
            if "data" in item or "binary_data_size" in in_params:
                raise InvalidArgumentError(
                    f"{_where(name, model_name)}: has both shared memory and data"
                )
            region, offset, nbytes = shm_ext.region_args(
                in_params, role="input", tensor=name, model=model_name
            )
            dt = tensors.check_datatype_for(datatype, name=name, model=model_name)
            dims = tensors.check_shape(shape, name=name, model=model_name)
            inputs[name] = shm.input_tensor(
                region, offset, nbytes, dt, dims, tensor=name, model=model_name
            )
            continue
        nbytes = in_params.get("binary_data_size")
        if nbytes is not None:
            if "data" in item:
                raise InvalidArgumentError(
                    f"{_where(name, model_name)}: has both 'data' and binary_data_size"
                )
            if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
                raise InvalidArgumentError(
                    f"{_where(name, model_name)}: binary_data_size must be a non-negative "
                    f"integer, got {nbytes!r}"
                )
            if header_length is None:
                raise InvalidArgumentError(
                    f"{_where(name, model_name)}: binary_data_size given but the request has "
                    "no Inference-Header-Content-Length header"
                )
            end = offset + nbytes
            if end > size:
                raise InvalidArgumentError(
                    f"{_where(name, model_name)}: binary_data_size {nbytes} runs past the end "
                    f"of the body ({size - offset} bytes left)"
                )
            inputs[name] = tensors.tensor_from_raw(
                datatype, shape, view[offset:end], name=name, model=model_name
            )
            offset = end
        elif "data" in item:
            inputs[name] = tensors.tensor_from_json(
                datatype, shape, item["data"], name=name, model=model_name
            )
        else:
            raise InvalidArgumentError(
                f"{_where(name, model_name)}: has neither 'data' nor binary_data_size"
            )
    if header_length is not None and offset != size:
        raise InvalidArgumentError(
            f"request to model '{model_name}': body has {size - offset} bytes beyond the "
            "header and the inputs' binary_data_size total"
        )

    request = InferRequest(
        model_name=model_name,
        model_version=model_version,
        inputs=inputs,
        id=req_id,
        outputs=_requested_outputs(doc.get("outputs"), model_name, shm),
        parameters=params,
    )
    request_parameters(params, request, route_key)
    return request


def encode_infer_response(
    response: InferResponse,
    request: InferRequest | None = None,
    shm: SharedMemoryRegistry | None = None,
) -> tuple[bytes, int | None]:
    """Encode ``response`` for the client of ``request``.

    Returns ``(body, header_length)``: ``header_length`` is None for a pure JSON body,
    else the JSON header's size, to send as ``Inference-Header-Content-Length`` with the
    binary outputs after it. Outputs the request did not ask for are dropped; each
    output is binary when it asked so (per output ``binary_data``, else the request's
    ``binary_data_output``), and classification outputs become top-k BYTES.
    """
    wanted: dict[str, RequestedOutput] | None = None
    default_binary = False
    if request is not None:
        default_binary = request.binary_output_default
        if request.outputs is not None:
            wanted = {o.name: o for o in request.outputs}
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes | memoryview] = []
    for name, arr in response.outputs.items():
        binary = default_binary
        if wanted is not None:
            req = wanted.get(name)
            if req is None:
                continue
            if req.binary is not None:
                binary = req.binary
            if req.class_count:
                arr = tensors.classify(arr, req.class_count, name=name)
            if req.shm is not None and shm is not None:
                region, offset, size = req.shm
                written = shm.write_output(
                    region, offset, size, arr, tensor=name, model=response.model_name
                )
                outputs.append(
                    {
                        "name": name,
                        "datatype": tensors.datatype_of(arr, name=name),
                        "shape": list(arr.shape),
                        "parameters": {
                            shm_ext.PARAM_REGION: region,
                            shm_ext.PARAM_BYTE_SIZE: written,
                            **({shm_ext.PARAM_OFFSET: offset} if offset else {}),
                        },
                    }
                )
                continue
        binary = response.binary_outputs.get(name, binary)
        entry: dict[str, Any] = {
            "name": name,
            "datatype": tensors.datatype_of(arr, name=name),
            "shape": list(arr.shape),
        }
        if binary:
            raw = tensors.tensor_to_raw(arr)
            entry["parameters"] = {
                "binary_data_size": raw.nbytes if isinstance(raw, memoryview) else len(raw)
            }
            blobs.append(raw)
        else:
            entry["data"] = tensors.json_payload(arr, name=name)
        outputs.append(entry)
    doc: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
    }
    req_id = response.id or (request.id if request is not None else "")
    if req_id:
        doc["id"] = req_id
    if response.parameters:
        doc["parameters"] = response.parameters
    doc["outputs"] = outputs
    header = orjson.dumps(doc, option=_DUMPS_OPTS)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


_INT64_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)


def _ints_back(msg: Message, doc: dict[str, Any]) -> None:
    # proto3 JSON writes 64-bit ints as strings; Triton's HTTP config has them as numbers
    # ("dims": [16]), which is what tools reading the config expect.
    for field in msg.DESCRIPTOR.fields:
        key = field.name
        if key not in doc:
            continue
        value = getattr(msg, key)
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            entry = field.message_type
            if entry.GetOptions().map_entry:
                value_field = entry.fields_by_name["value"]
                if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                    for k, sub in value.items():
                        _ints_back(sub, doc[key][str(k)])
                elif value_field.type in _INT64_TYPES:
                    doc[key] = {k: int(v) for k, v in doc[key].items()}
            elif _is_repeated(field):
                for sub, sub_doc in zip(value, doc[key], strict=True):
                    _ints_back(sub, sub_doc)
            else:
                _ints_back(value, doc[key])
        elif field.type in _INT64_TYPES:
            doc[key] = [int(v) for v in doc[key]] if _is_repeated(field) else int(doc[key])


def _is_repeated(field: FieldDescriptor) -> bool:
    # protobuf >= 5 has `is_repeated`; `label` is deprecated there.
    flag = getattr(field, "is_repeated", None)
    return bool(flag) if flag is not None else field.label == FieldDescriptor.LABEL_REPEATED


def model_config_to_json(config: Message) -> dict[str, Any]:
    """A ``ModelConfig`` as Triton's HTTP config endpoint returns it.

    Proto field names (``max_batch_size``), default-valued fields included, and 64-bit
    integers as JSON numbers.
    """
    doc = json_format.MessageToDict(
        config,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    _ints_back(config, doc)
    return doc


def dumps(obj: Any) -> bytes:
    """JSON bytes for any endpoint's answer (numpy-aware)."""
    return orjson.dumps(obj, option=_DUMPS_OPTS)


def error_body(exc: BaseException) -> tuple[int, bytes]:
    """``(http_status, {"error": ...} body)``; never contains a traceback."""
    return status_for(exc).http, orjson.dumps({"error": client_message(exc)})
