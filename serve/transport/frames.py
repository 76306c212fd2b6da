"""The transport's wire format: one frame per request, answer, error or control message.

Every frame is a fixed 24-byte header, a small orjson header and the raw tensor bytes::

    <Q request id> <B kind> <3x pad> <I header length> <Q body length>
    REQUEST   {"t": [[name, datatype, shape, nbytes, where], ...], "o": timeout_us, "p": priority,
               "tr": 1 (traced: report timing)}
    RESPONSE  {"t": [[name, datatype, shape, nbytes, 0], ...], "tm": [queue_s, compute_s,
               batch requests, batch rows] (for a traced request)}
    ERROR     {"e": class name, "m": message, "r": retryable}
    CANCEL    {}  (the caller gave up on request id; drop it if it is still queued)
    HELLO     the handshake (:mod:`rayfront.transport.handshake`)

``where`` says where a tensor's bytes are: ``0`` inline, back to back in the body in
tensor order; ``["a", offset]`` in the sender's shared-memory arena
(:mod:`rayfront.transport.arena`); ``["f", path, offset, dev, ino]`` in a file the
receiver reads itself (a client's registered system shared-memory region), checked by
device and inode so a swapped file is refused. Tensor bytes are converted only by
:mod:`rayfront.tensors`; decoded inline numeric arrays are ``np.frombuffer`` views of the
frame (read-only, no copy).

Errors raised in the replica travel as the name of the same :mod:`rayfront.errors` class
and its message; anything else becomes :class:`~rayfront.errors.InternalError` without
internals. :class:`ConnectionLost` tells the caller a request never got an answer, so an
idempotent inference may be retried on another replica.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from rayfront import errors as _errors
from rayfront import tensors
from rayfront.errors import InternalError, InvalidArgumentError, RayfrontError, UnavailableError
from rayfront.tensors import FileTensor, TensorDict
from rayfront.tracing import StageTiming

#: request id (u64), kind (u8), padding, header length (u32), body length (u64).
FRAME = struct.Struct("<QB3xIQ")
KIND_REQUEST = 1
KIND_RESPONSE = 2
KIND_ERROR = 3
KIND_HELLO = 4
KIND_CANCEL = 5
# Liveness: a client with calls outstanding pings; the replica's read loop answers at once,
# however long its batches take. A replica that stops answering (hung, stopped) is left.
KIND_PING = 6
KIND_PONG = 7
KINDS = frozenset(
    {KIND_REQUEST, KIND_RESPONSE, KIND_ERROR, KIND_HELLO, KIND_CANCEL, KIND_PING, KIND_PONG}
)

#: Above this many unsent bytes a writer awaits drain(); below it, writing never yields, so
#: small frames cost no extra trip through the event loop.
HIGH_WATER = 1 << 20
#: A frame's JSON header is small metadata; anything larger is a broken or hostile peer.
MAX_HEADER_BYTES = 1 << 20

#: Resolves an arena reference (offset, nbytes) to a read-only buffer (the receiver's map).
ArenaReader = Callable[[int, int], memoryview]
#: Opens a file reference (path, dev, ino) as a readable file descriptor (cached by caller).
FileOpener = Callable[[str, int, int], int]


class ConnectionLost(UnavailableError):
    """The request got no answer: the connection failed, or the replica is draining.

    Inference is idempotent, so the caller may run the same request on another replica.
    ``connect_failed`` is true when the replica could not be reached at all (it is most
    likely gone), as opposed to a connection that broke mid-request.
    """

    def __init__(self, message: str, *, connect_failed: bool = False) -> None:
        super().__init__(message)
        self.connect_failed = connect_failed


class _ClientRegionError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ProtocolError(Exception):
    """The peer broke the wire format; the connection is closed, nothing is answered."""


@dataclass(slots=True)
class RequestMeta:
    """Scheduling facts that travel with a request.

    ``timing`` set on a request asks the replica to report its queue and compute time
    (``"tr": 1``); the replica's answer carries them (``"tm"``) and the client fills it in.
    """

    timeout_us: int | None = None
    priority: int = 0
    timing: StageTiming | None = None


def check_fixed(kind: int, header_len: int, body_len: int, *, max_body: int) -> None:
    """Refuse a frame header before reading what it announces."""
    if kind not in KINDS:
        raise ProtocolError(f"unknown frame kind {kind}")
    if header_len > MAX_HEADER_BYTES:
        raise ProtocolError(f"frame header of {header_len} bytes exceeds {MAX_HEADER_BYTES}")
    if body_len > max_body:
        raise ProtocolError(f"frame body of {body_len} bytes exceeds the {max_body}-byte cap")


def encode_tensors(
    request_id: int,
    kind: int,
    named: TensorDict,
    *,
    meta: RequestMeta | None = None,
    place: Callable[[np.ndarray], tuple[Any, ...] | None] | None = None,
) -> list[bytes | memoryview]:
    """One frame for ``named``: the fixed header plus orjson header, then the inline bytes.

    ``place(array)`` may put an array's bytes elsewhere and return its ``where`` reference
    (the arena); :class:`~rayfront.tensors.FileTensor` values travel as file references.
    """
    entries: list[list[Any]] = []
    buffers: list[bytes | memoryview] = []
    total = 0
    for name, value in named.items():
        if isinstance(value, FileTensor):
            datatype = tensors.datatype_of(value, name=name, role="tensor")
            entries.append([name, datatype, value.shape, value.nbytes, value.reference()])
            continue
        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        datatype = tensors.datatype_of(arr, name=name, role="tensor")
        where = place(arr) if place is not None and datatype != "BYTES" else None
        if where is not None:
            entries.append([name, datatype, arr.shape, arr.nbytes, where])
            continue
        raw = tensors.tensor_to_raw(arr)
        size = raw.nbytes if isinstance(raw, memoryview) else len(raw)
        entries.append([name, datatype, arr.shape, size, 0])
        if size:
            buffers.append(raw)
        total += size
    doc: dict[str, Any] = {"t": entries}
    if meta is not None:
        if meta.timeout_us:
            doc["o"] = meta.timeout_us
        if meta.priority:
            doc["p"] = meta.priority
        if meta.timing is not None:
            # On a request: report timing; on an answer: the timing.
            doc["tm" if kind == KIND_RESPONSE else "tr"] = (
                meta.timing.to_wire() if kind == KIND_RESPONSE else 1
            )
    header = orjson.dumps(doc)
    return [FRAME.pack(request_id, kind, len(header), total) + header, *buffers]


def decode_tensors(
    payload: bytes | bytearray,
    header_len: int,
    *,
    arena: ArenaReader | None = None,
    open_file: FileOpener | None = None,
) -> tuple[TensorDict, RequestMeta]:
    """Tensors and scheduling facts of a REQUEST/RESPONSE frame.

    Inline numeric arrays are views of ``payload``; arena tensors are views of the arena
    map; file references become :class:`~rayfront.tensors.FileTensor` (read later, straight
    into the batch buffer). Malformed frames raise InternalError (a peer bug, never data).
    """
    try:
        doc = orjson.loads(memoryview(payload)[:header_len])
        entries = doc["t"]
        meta = RequestMeta(timeout_us=doc.get("o"), priority=int(doc.get("p", 0)))
        if "tr" in doc:
            meta.timing = StageTiming()
        elif "tm" in doc:
            meta.timing = StageTiming()
            meta.timing.fill(doc["tm"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InternalError(f"transport: malformed tensor header ({exc})") from None
    body = memoryview(payload)
    offset = header_len
    out: TensorDict = {}
    try:
        for name, datatype, shape, size, where in entries:
            if where == 0:
                end = offset + size
                if end > len(payload):
                    raise InternalError(
                        f"transport: tensor {name!r} claims {size} bytes but the frame has "
                        f"{len(payload) - offset} left"
                    )
                out[name] = tensors.tensor_from_raw(
                    datatype, shape, body[offset:end], name=name, model=""
                )
                offset = end
            elif where[0] == "a" and arena is not None:
                out[name] = tensors.tensor_from_raw(
                    datatype, shape, arena(int(where[1]), size), name=name, model=""
                )
            elif where[0] == "f" and open_file is not None:
                _, path, file_offset, dev, ino = where
                try:
                    fd = open_file(path, int(dev), int(ino))
                except InvalidArgumentError as exc:
                    # The client's region, not the frame, is wrong: tell the client so.
                    raise _ClientRegionError(exc.message) from None
                out[name] = FileTensor(
                    fd,
                    int(file_offset),
                    tensors.to_wire_dtype(datatype),
                    tuple(shape),
                    path=path,
                    dev=int(dev),
                    ino=int(ino),
                )
            else:
                raise InternalError(
                    f"transport: tensor {name!r} has an unusable location {where!r}"
                )
    except _ClientRegionError as exc:
        raise InvalidArgumentError(exc.message) from None
    except InvalidArgumentError as exc:
        raise InternalError(f"transport: {exc.message}") from None
    except (TypeError, ValueError, IndexError) as exc:
        raise InternalError(f"transport: malformed tensor entry ({exc})") from None
    return out, meta


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


def encode_cancel(request_id: int) -> bytes:
    return FRAME.pack(request_id, KIND_CANCEL, 0, 0)


def encode_ping(nonce: int) -> bytes:
    return FRAME.pack(nonce, KIND_PING, 0, 0)


def encode_pong(nonce: int) -> bytes:
    return FRAME.pack(nonce, KIND_PONG, 0, 0)


def decode_error(payload: bytes | bytearray, header_len: int) -> RayfrontError:
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


async def read_frame(reader: asyncio.StreamReader, *, max_body: int) -> tuple[int, int, int, bytes]:
    """(request id, kind, header length, header + body) of the next frame.

    The fixed header is checked before anything it announces is read, so a peer cannot
    make this side buffer more than ``max_body`` bytes.
    """
    fixed = await reader.readexactly(FRAME.size)
    request_id, kind, header_len, body_len = FRAME.unpack(fixed)
    check_fixed(kind, header_len, body_len, max_body=max_body)
    size = header_len + body_len
    payload = await reader.readexactly(size) if size else b""
    return request_id, kind, header_len, payload


def buffered(writer: asyncio.StreamWriter) -> int:
    """Bytes written but not yet sent."""
    return writer.transport.get_write_buffer_size()
