"""The ingress side of the transport: one pipelined connection to one replica.

Tensors are written with ``writelines`` straight from the arrays' memory; a frame is
read with two ``readexactly`` calls. A lost connection fails its pending calls with
:class:`~rayfront.transport.frames.ConnectionLost`; the client reconnects on its next call.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket

from rayfront.errors import InternalError, RayfrontError
from rayfront.tensors import TensorDict
from rayfront.transport.discovery import Endpoint
from rayfront.transport.frames import (
    FRAME,
    HIGH_WATER,
    KIND_ERROR,
    KIND_HELLO,
    KIND_REQUEST,
    KIND_RESPONSE,
    ConnectionLost,
    buffered,
    decode_error,
    decode_tensors,
    encode_hello,
    encode_tensors,
    read_frame,
)

CONNECT_TIMEOUT_S = 2.0


def probe(endpoint: Endpoint, local_node_id: str | None = None, timeout_s: float = 0.5) -> bool:
    """Blocking check that the endpoint answers a HELLO with its token (off the event loop).

    False when nothing listens there, or something else does (a different replica that
    reuses the address rejects the token).
    """
    try:
        if endpoint.reachable_by_uds(local_node_id):
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


class TransportClient:
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
        self._use_uds = endpoint.reachable_by_uds(local_node_id)
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
                        _, kind, _, _ = await read_frame(reader)
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
            if buffered(writer) > HIGH_WATER:
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
                request_id, kind, header_len, payload = await read_frame(reader)
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
