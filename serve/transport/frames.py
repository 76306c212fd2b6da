"""The transport's wire format: one frame per batch, request or answer.

Every frame is a fixed 24-byte header, a small orjson header and the raw tensor bytes::

    <Q request id> <B kind> <3x pad> <I header length> <Q body length>
    header: {"t": [[name, datatype, shape, nbytes], ...]}   (kind REQUEST / RESPONSE)
            {"e": class name, "m": message, "r": retryable}  (kind ERROR)
            the endpoint's token, raw                         (kind HELLO; empty reply)
    body:   the tensors' bytes back to back, little-endian, row-major (BYTES tensors in
            Triton's length-prefixed form)

Tensor bytes are converted only by :mod:`rayfront.tensors`, the codec HTTP and gRPC use
too. Decoded numeric arrays are ``np.frombuffer`` views of the frame (read-only, no copy).

Errors raised in the replica travel as the name of the same :mod:`rayfront.errors` class
and its message; anything else becomes :class:`~rayfront.errors.InternalError` without
internals. :class:`ConnectionLost` tells the caller a request never got an answer, so an
idempotent inference may be retried on another replica.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import numpy as np
import orjson

from rayfront import errors as _errors
from rayfront import tensors
from rayfront.errors import InternalError, InvalidArgumentError, RayfrontError, UnavailableError
from rayfront.tensors import TensorDict

#: request id (u64), kind (u8), padding, header length (u32), body length (u64).
FRAME = struct.Struct("<QB3xIQ")
KIND_REQUEST = 1
KIND_RESPONSE = 2
KIND_ERROR = 3
KIND_HELLO = 4

#: Above this many unsent bytes a writer awaits drain(); below it, writing never yields, so
#: small frames cost no extra trip through the event loop.
HIGH_WATER = 1 << 20


class ConnectionLost(UnavailableError):
    """The request got no answer: the connection failed, or the replica is draining.

    Inference is idempotent, so the caller may run the same batch on another replica.
    ``connect_failed`` is true when the replica could not be reached at all (it is most
    likely gone), as opposed to a connection that broke mid-request.
    """

    def __init__(self, message: str, *, connect_failed: bool = False) -> None:
        super().__init__(message)
        self.connect_failed = connect_failed


def encode_tensors(request_id: int, kind: int, named: TensorDict) -> list[bytes | memoryview]:
    """One frame for ``named``: the fixed header plus orjson header, then each buffer."""
    meta: list[list[Any]] = []
    buffers: list[bytes | memoryview] = []
    total = 0
    for name, value in named.items():
        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        datatype = tensors.datatype_of(arr, name=name, role="tensor")
        raw = tensors.tensor_to_raw(arr)
        size = raw.nbytes if isinstance(raw, memoryview) else len(raw)
        meta.append([name, datatype, arr.shape, size])
        if size:
            buffers.append(raw)
        total += size
    header = orjson.dumps({"t": meta})
    return [FRAME.pack(request_id, kind, len(header), total) + header, *buffers]


def decode_tensors(payload: bytes, header_len: int) -> TensorDict:
    """Tensors of a REQUEST/RESPONSE frame; numeric arrays are views of ``payload``."""
    try:
        meta = orjson.loads(memoryview(payload)[:header_len])["t"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise InternalError(f"transport: malformed tensor header ({exc})") from None
    body = memoryview(payload)
    offset = header_len
    out: TensorDict = {}
    for name, datatype, shape, size in meta:
        end = offset + size
        if end > len(payload):
            raise InternalError(
                f"transport: tensor {name!r} claims {size} bytes but the frame has "
                f"{len(payload) - offset} left"
            )
        try:
            out[name] = tensors.tensor_from_raw(
                datatype, shape, body[offset:end], name=name, model=""
            )
        except InvalidArgumentError as exc:
            raise InternalError(f"transport: {exc.message}") from None
        offset = end
    return out


def wire_error_name(exc: BaseException) -> str:
    """The nearest class of ``exc``'s MRO that :mod:`rayfront.errors` defines."""
    for cls in type(exc).__mro__:
        if getattr(_errors, cls.__name__, None) is cls and issubclass(cls, RayfrontError):
            return cls.__name__
    return "InternalError"


def encode_error(
    request_id: int, name: str, message: str, *, retryable: bool = False
) -> list[bytes | memoryview]:
    header = orjson.dumps({"e": name, "m": message, "r": retryable})
    return [FRAME.pack(request_id, KIND_ERROR, len(header), 0) + header]


def decode_error(payload: bytes, header_len: int) -> RayfrontError:
    """The exception an ERROR frame describes: the same rayfront.errors class, else internal."""
    try:
        info = orjson.loads(memoryview(payload)[:header_len])
        name, message = str(info["e"]), str(info["m"])
        retryable = bool(info.get("r"))
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        return InternalError(f"transport: malformed error frame ({exc})")
    if retryable:
        return ConnectionLost(message)
    cls = getattr(_errors, name, None)
    if isinstance(cls, type) and issubclass(cls, RayfrontError):
        try:
            return cls(message)
        except TypeError:  # a subclass with a different constructor
            pass
    return InternalError(message)


def encode_hello(token: str) -> bytes:
    raw = token.encode()
    return FRAME.pack(0, KIND_HELLO, len(raw), 0) + raw


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, int, int, bytes]:
    """(request id, kind, header length, header + body) of the next frame."""
    fixed = await reader.readexactly(FRAME.size)
    request_id, kind, header_len, body_len = FRAME.unpack(fixed)
    size = header_len + body_len
    payload = await reader.readexactly(size) if size else b""
    return request_id, kind, header_len, payload


def buffered(writer: asyncio.StreamWriter) -> int:
    """Bytes written but not yet sent."""
    return writer.transport.get_write_buffer_size()
