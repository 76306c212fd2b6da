"""The fast path: a lean binary protocol carrying one batch from the gateway to a replica.

A Ray Serve handle call costs ~1.8 ms of gateway CPU on a 2-core box, which caps the
gateway near 550 batches/s whatever the model. Serve still owns the replicas' lifecycle
and autoscaling; only the data moves over this protocol: a Unix domain socket when the
replica shares the gateway's node, TCP otherwise.

Every frame is a fixed 24-byte header, a small orjson header and the raw tensor bytes::

    <Q request id> <B kind> <3x pad> <I header length> <Q body length>
    header: {"t": [[name, datatype, shape, nbytes], ...]}   (kind REQUEST / RESPONSE)
            {"e": class name, "m": message, "r": retryable}  (kind ERROR)
            the endpoint's token, raw                         (kind HELLO; empty reply)
    body:   the tensors' bytes back to back, little-endian, row-major (BYTES tensors in
            Triton's length-prefixed form via :mod:`rayfront.protocol.codec`)

A connection opens with a HELLO exchange carrying the endpoint's token: the token is
published with the endpoint in Ray's GCS KV (which Ray's own authentication guards), so
only a gateway of this cluster can send batches, and a stale endpoint can never reach a
different replica that happens to reuse the address.

Tensors are written with ``writelines`` straight from the arrays' memory; a frame is read
with two ``readexactly`` calls (fixed header, then header and body together) and numeric
arrays are ``np.frombuffer`` views of that buffer (read-only, no further copy). A connection is pipelined: many requests in flight,
responses matched by id in whatever order they finish.

Errors raised in the replica come back as the same :mod:`rayfront.errors` class with the
same message; anything else becomes :class:`~rayfront.errors.InternalError` without
internals. A lost connection fails its pending calls with :class:`ConnectionLost`, an
:class:`~rayfront.errors.UnavailableError` that tells the caller the request never got an
answer (so an idempotent inference may be retried on another replica); the client
reconnects on its next call.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import logging
import os
import secrets
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field

from rayfront import errors as _errors
from rayfront.errors import InternalError, InvalidArgumentError, RayfrontError, UnavailableError
from rayfront.protocol.codec import deserialize_bytes, serialize_bytes
from rayfront.runtimes.base import TensorDict

logger = logging.getLogger(__name__)

Execute = Callable[[TensorDict], Awaitable[TensorDict]]

#: request id (u64), kind (u8), padding, header length (u32), body length (u64).
FRAME = struct.Struct("<QB3xIQ")
KIND_REQUEST = 1
KIND_RESPONSE = 2
KIND_ERROR = 3
KIND_HELLO = 4

# Above this many unsent bytes a writer awaits drain(); below it, writing never yields, so
# small frames cost no extra trip through the event loop.
_HIGH_WATER = 1 << 20
CONNECT_TIMEOUT_S = 2.0
# Sun_path is 108 bytes on Linux; a longer path fails at bind time with a vague error.
_MAX_UDS_PATH = 107

_WIRE: dict[str, np.dtype] = {
    "BOOL": np.dtype("|b1"),
    "UINT8": np.dtype("|u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("|i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
_DATATYPE_OF: dict[str, str] = {dt.str[1:]: name for name, dt in _WIRE.items()}


class ConnectionLost(UnavailableError):
    """The request got no answer: the connection failed, or the replica is draining.

    Inference is idempotent, so the caller may run the same batch on another replica.
    ``connect_failed`` is true when the replica could not be reached at all (it is most
    likely gone), as opposed to a connection that broke mid-request.
    """

    def __init__(self, message: str, *, connect_failed: bool = False) -> None:
        super().__init__(message)
        self.connect_failed = connect_failed


class Endpoint(BaseModel):
    """Where one replica's fast-path server listens; published in Ray's GCS KV."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node_id: str = Field(default="", description="Ray node id of the replica ('' = unknown).")
    uds: str | None = Field(default=None, description="Unix socket path (same-node clients).")
    host: str | None = Field(default=None, description="TCP address for other nodes.")
    port: int | None = Field(default=None, ge=0, le=65535, description="TCP port.")
    pid: int = Field(default=0, ge=0, description="Process id of the replica (diagnostics).")
    replica: str = Field(default="", description="Serve replica unique id.")
    token: str = Field(
        default="", repr=False, description="Shared secret a client presents in its HELLO."
    )

    def describe(self) -> str:
        where = self.uds if self.uds else f"{self.host}:{self.port}"
        return f"replica {self.replica or '?'} (pid {self.pid}) at {where}"


# --- framing (pure functions) -------------------------------------------------------------


def _datatype(name: str, arr: np.ndarray) -> str:
    kind = arr.dtype.kind
    if kind in ("O", "S", "U"):
        return "BYTES"
    key = arr.dtype.str[1:]
    datatype = _DATATYPE_OF.get(key)
    if datatype is None:
        raise InvalidArgumentError(
            f"tensor {name!r} has numpy dtype {arr.dtype}, which has no KServe v2 datatype"
        )
    return datatype


def _raw(arr: np.ndarray, datatype: str) -> bytes | memoryview:
    if datatype == "BYTES":
        return serialize_bytes(arr)
    if arr.dtype.str[0] == ">":  # dtype.str spells the byte order out ('<', '>' or '|')
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    return memoryview(arr.reshape(-1).view(np.uint8))


def encode_tensors(request_id: int, kind: int, tensors: TensorDict) -> list[bytes | memoryview]:
    """One frame for ``tensors``: the fixed header plus orjson header, then each buffer."""
    meta: list[list[Any]] = []
    buffers: list[bytes | memoryview] = []
    total = 0
    for name, value in tensors.items():
        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        datatype = _datatype(name, arr)
        raw = _raw(arr, datatype)
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
        raise InternalError(f"fast path: malformed tensor header ({exc})") from None
    body = memoryview(payload)
    offset = header_len
    out: TensorDict = {}
    for name, datatype, shape, size in meta:
        end = offset + size
        if end > len(payload):
            raise InternalError(
                f"fast path: tensor {name!r} claims {size} bytes but the frame has "
                f"{len(payload) - offset} left"
            )
        shape = tuple(shape)
        if datatype == "BYTES":
            count = 1
            for d in shape:
                count *= d
            arr = deserialize_bytes(body[offset:end], count, name=name, model="").reshape(shape)
        else:
            dtype = _WIRE.get(datatype)
            if dtype is None:
                raise InternalError(f"fast path: tensor {name!r} has unknown datatype {datatype!r}")
            if size == 0:
                arr = np.empty(shape, dtype=dtype.newbyteorder("="))
            else:
                arr = np.frombuffer(body[offset:end], dtype=dtype).reshape(shape)
                if not dtype.isnative:
                    arr = arr.astype(dtype.newbyteorder("="))
        out[name] = arr
        offset = end
    return out


def _wire_error_name(exc: BaseException) -> str:
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
        return InternalError(f"fast path: malformed error frame ({exc})")
    if retryable:
        return ConnectionLost(message)
    cls = getattr(_errors, name, None)
    if isinstance(cls, type) and issubclass(cls, RayfrontError):
        try:
            return cls(message)
        except TypeError:  # a subclass with a different constructor
            pass
    return InternalError(message)


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, int, int, bytes]:
    fixed = await reader.readexactly(FRAME.size)
    request_id, kind, header_len, body_len = FRAME.unpack(fixed)
    size = header_len + body_len
    payload = await reader.readexactly(size) if size else b""
    return request_id, kind, header_len, payload


def _buffered(writer: asyncio.StreamWriter) -> int:
    return writer.transport.get_write_buffer_size()


def encode_hello(token: str) -> bytes:
    raw = token.encode()
    return FRAME.pack(0, KIND_HELLO, len(raw), 0) + raw


def _use_uds(endpoint: Endpoint, local_node_id: str | None) -> bool:
    return endpoint.uds is not None and (local_node_id is None or local_node_id == endpoint.node_id)


def probe(endpoint: Endpoint, local_node_id: str | None = None, timeout_s: float = 0.5) -> bool:
    """Blocking check that the endpoint answers a HELLO with its token (off the event loop).

    False when nothing listens there, or something else does (a different replica that
    reuses the address rejects the token).
    """
    try:
        if _use_uds(endpoint, local_node_id):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout_s)
            sock.connect(endpoint.uds)
        elif endpoint.host is not None and endpoint.port is not None:
            sock = socket.create_connection((endpoint.host, endpoint.port), timeout_s)
        else:
            return False
        with sock:
            sock.sendall(encode_hello(endpoint.token))
            reply = b""
            while len(reply) < FRAME.size:
                chunk = sock.recv(FRAME.size - len(reply))
                if not chunk:
                    return False
                reply += chunk
    except OSError:
        return False
    return FRAME.unpack(reply)[1] == KIND_HELLO


# --- server -------------------------------------------------------------------------------


class FastPathServer:
    """Serves ``execute(tensors) -> tensors`` to fast-path clients.

    ``execute`` decides the concurrency (ModelVersion runs it on its one-thread executor,
    so pipelined requests queue there while the previous batch runs).
    """

    def __init__(self, execute: Execute, *, name: str = "") -> None:
        if not callable(execute):
            raise TypeError(f"execute must be an async callable, got {type(execute).__name__}")
        self._execute = execute
        self.name = name
        self._servers: list[asyncio.AbstractServer] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._inflight = 0
        self._idle: asyncio.Event | None = None
        self._closing = False
        self._uds: str | None = None
        self._token = ""
        self.endpoint: Endpoint | None = None

    @property
    def inflight(self) -> int:
        """Requests received and not yet answered."""
        return self._inflight

    async def start(
        self,
        *,
        uds_path: str | None = None,
        host: str | None = None,
        port: int = 0,
        node_id: str = "",
        replica: str = "",
        token: str | None = None,
    ) -> Endpoint:
        """Listen on a Unix socket and/or TCP; returns where clients can connect.

        ``token`` defaults to a fresh random secret; clients learn it from the endpoint.
        """
        if uds_path is None and host is None:
            raise ValueError("FastPathServer.start needs a uds_path, a host, or both")
        tcp_port: int | None = None
        self._token = secrets.token_hex(16) if token is None else token
        if uds_path is not None:
            if len(uds_path.encode()) > _MAX_UDS_PATH:
                raise ValueError(
                    f"unix socket path {uds_path!r} is {len(uds_path.encode())} bytes; "
                    f"the limit is {_MAX_UDS_PATH}: choose a shorter directory"
                )
            with contextlib.suppress(FileNotFoundError):
                os.unlink(uds_path)  # left behind by a killed process with our pid/replica id
            server = await asyncio.start_unix_server(self._serve, path=uds_path)
            self._servers.append(server)
            self._uds = uds_path
        if host is not None:
            server = await asyncio.start_server(self._serve, host=host, port=port)
            self._servers.append(server)
            tcp_port = server.sockets[0].getsockname()[1]
        self.endpoint = Endpoint(
            node_id=node_id,
            uds=uds_path,
            host=host,
            port=tcp_port,
            pid=os.getpid(),
            replica=replica,
            token=self._token,
        )
        logger.info("fast path %s listening: %s", self.name, self.endpoint.describe())
        return self.endpoint

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        loop = asyncio.get_running_loop()
        try:
            _, kind, header_len, payload = await _read_frame(reader)
            token = payload[:header_len]
            if kind != KIND_HELLO or not hmac.compare_digest(token, self._token.encode()):
                logger.warning(
                    "fast path %s: refused a connection without the endpoint's token", self.name
                )
                return
            writer.write(FRAME.pack(0, KIND_HELLO, 0, 0))
            while True:
                request_id, kind, header_len, payload = await _read_frame(reader)
                if kind != KIND_REQUEST:
                    logger.warning(
                        "fast path %s: unexpected frame kind %d; closing", self.name, kind
                    )
                    return
                if self._closing:
                    writer.writelines(
                        encode_error(
                            request_id,
                            "UnavailableError",
                            f"replica of {self.name} is shutting down; retry on another replica",
                            retryable=True,
                        )
                    )
                    continue
                self._inflight += 1
                task = loop.create_task(self._run(writer, request_id, header_len, payload))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away; its in-flight answers are dropped
        except asyncio.CancelledError:
            # Only the loop's teardown cancels a connection handler; asyncio's stream
            # callback would report the cancellation as an error, so end quietly.
            pass
        finally:
            if not self._closing:
                self._writers.discard(writer)
                writer.close()

    async def _run(
        self, writer: asyncio.StreamWriter, request_id: int, header_len: int, payload: bytes
    ) -> None:
        try:
            try:
                outputs = await self._execute(decode_tensors(payload, header_len))
                frame = encode_tensors(request_id, KIND_RESPONSE, outputs)
            except RayfrontError as exc:
                frame = encode_error(request_id, _wire_error_name(exc), exc.message)
            except Exception as exc:
                # The client sees the class name only; the traceback stays in this log.
                logger.exception("fast path %s: execution failed", self.name)
                frame = encode_error(
                    request_id, "InternalError", f"model execution failed: {type(exc).__name__}"
                )
            if writer.is_closing():
                return
            writer.writelines(frame)
            if _buffered(writer) > _HIGH_WATER:
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
        finally:
            self._inflight -= 1
            if self._inflight == 0 and self._idle is not None:
                self._idle.set()

    async def close(self, timeout_s: float | None = None) -> None:
        """Stop accepting, answer everything in flight (new requests get a retryable error)."""
        if self._closing:
            return
        self._closing = True
        for server in self._servers:
            server.close()
        if self._inflight:
            self._idle = asyncio.Event()
            try:
                async with asyncio.timeout(timeout_s):
                    await self._idle.wait()
            except TimeoutError:
                logger.warning(
                    "fast path %s: %d requests still running after %.0fs; closing anyway",
                    self.name,
                    self._inflight,
                    timeout_s,
                )
        for writer in list(self._writers):
            if not writer.is_closing() and _buffered(writer):
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
            writer.close()
        self._writers.clear()
        if self._uds is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._uds)
        logger.info("fast path %s closed", self.name)


# --- client -------------------------------------------------------------------------------


class FastPathClient:
    """One pipelined connection to one replica's fast-path server.

    ``local_node_id`` is the caller's Ray node: the Unix socket is used only when it
    matches the endpoint's node (with ``None``, whenever the endpoint has one).
    """

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        local_node_id: str | None = None,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        self.endpoint = endpoint
        self._use_uds = _use_uds(endpoint, local_node_id)
        if not self._use_uds and (endpoint.host is None or endpoint.port is None):
            raise ValueError(
                f"endpoint {endpoint.describe()} has no TCP address and is on node "
                f"{endpoint.node_id!r}, not this node {local_node_id!r}"
            )
        self._connect_timeout_s = connect_timeout_s
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[TensorDict]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._connecting: asyncio.Lock | None = None
        self._alive = False
        self._closed = False
        self._idle: asyncio.Event | None = None

    @property
    def inflight(self) -> int:
        """Calls sent and not yet answered."""
        return len(self._pending)

    @property
    def connected(self) -> bool:
        return self._alive

    async def _connect(self) -> asyncio.StreamWriter:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._alive and self._writer is not None:
                return self._writer
            if self._closed:
                raise ConnectionLost(f"fast path to {self.endpoint.describe()} is closed")
            ep = self.endpoint
            try:
                async with asyncio.timeout(self._connect_timeout_s):
                    if self._use_uds:
                        reader, writer = await asyncio.open_unix_connection(ep.uds)
                    else:
                        reader, writer = await asyncio.open_connection(ep.host, ep.port)
                    writer.write(encode_hello(ep.token))
                    try:
                        _, kind, _, _ = await _read_frame(reader)
                    except asyncio.IncompleteReadError:
                        kind = 0
                    if kind != KIND_HELLO:
                        writer.close()
                        raise ConnectionLost(
                            f"cannot use {ep.describe()}: it refused this endpoint's token "
                            "(another process listens there now)",
                            connect_failed=True,
                        )
            except (OSError, TimeoutError) as exc:
                reason = "timed out" if isinstance(exc, TimeoutError) else str(exc)
                raise ConnectionLost(
                    f"cannot reach {ep.describe()}: {reason}", connect_failed=True
                ) from None
            if not self._use_uds:
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._writer = writer
            self._alive = True
            self._reader_task = asyncio.get_running_loop().create_task(
                self._read_loop(reader, writer)
            )
            return writer

    async def call(self, tensors: TensorDict) -> TensorDict:
        """Run one batch on the replica; raises its error, or ConnectionLost."""
        writer = self._writer if self._alive else None
        if writer is None:
            writer = await self._connect()
        request_id = next(self._ids)
        future: asyncio.Future[TensorDict] = asyncio.get_running_loop().create_future()
        frame = encode_tensors(request_id, KIND_REQUEST, tensors)
        self._pending[request_id] = future
        try:
            writer.writelines(frame)
            if _buffered(writer) > _HIGH_WATER:
                await writer.drain()
            return await future
        except ConnectionError as exc:
            raise ConnectionLost(
                f"connection to {self.endpoint.describe()} failed while sending: {exc}"
            ) from None
        finally:
            self._pending.pop(request_id, None)
            if not self._pending and self._idle is not None:
                self._idle.set()

    async def _read_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reason = "closed by the replica"
        try:
            while True:
                request_id, kind, header_len, payload = await _read_frame(reader)
                future = self._pending.get(request_id)
                if future is None or future.done():
                    continue  # the caller gave up (cancelled); drop its answer
                if kind == KIND_RESPONSE:
                    try:
                        future.set_result(decode_tensors(payload, header_len))
                    except RayfrontError as exc:
                        future.set_exception(exc)
                elif kind == KIND_ERROR:
                    future.set_exception(decode_error(payload, header_len))
                else:
                    future.set_exception(InternalError(f"fast path: unexpected frame kind {kind}"))
        except asyncio.IncompleteReadError:
            reason = "closed by the replica"
        except (ConnectionError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
        except asyncio.CancelledError:
            reason = "client closed"
        finally:
            self._fail_pending(f"connection to {self.endpoint.describe()} lost ({reason})")
            writer.close()

    def _fail_pending(self, message: str) -> None:
        self._alive = False
        self._writer = None
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(ConnectionLost(message))
        if self._idle is not None:
            self._idle.set()

    async def wait_idle(self, timeout_s: float | None = None) -> bool:
        """Wait until no call is pending; False on timeout."""
        while self._pending:
            self._idle = asyncio.Event()
            try:
                async with asyncio.timeout(timeout_s):
                    await self._idle.wait()
            except TimeoutError:
                return False
        return True

    async def close(self) -> None:
        """Close the connection; calls still pending fail with ConnectionLost."""
        self._closed = True
        task = self._reader_task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._fail_pending(f"fast path to {self.endpoint.describe()} closed")
