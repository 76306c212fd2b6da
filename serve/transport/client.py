"""The ingress side of the transport: one pipelined, authenticated connection to one replica.

The connection is set up in a worker thread (connect, then the mutual handshake of
:mod:`rayfront.transport.handshake`, passing this process's arena on a Unix socket), and
then driven by the event loop. Requests that are sent in the same turn of the loop go out
in one write. Large tensors go through the arena when the replica shares the host. A
caller that gives up sends CANCEL, so a request still queued at the replica is dropped.
A lost connection fails its pending calls with
:class:`~rayfront.transport.frames.ConnectionLost`; the client reconnects on its next call.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import time
from typing import Any

import numpy as np

from rayfront.errors import InternalError, RayfrontError
from rayfront.tensors import TensorDict
from rayfront.transport.arena import Arena, Block
from rayfront.transport.discovery import Endpoint
from rayfront.transport.frames import (
    HIGH_WATER,
    KIND_ERROR,
    KIND_PONG,
    KIND_REQUEST,
    KIND_RESPONSE,
    ConnectionLost,
    ProtocolError,
    RequestMeta,
    buffered,
    decode_error,
    decode_tensors,
    encode_cancel,
    encode_ping,
    encode_tensors,
    read_frame,
)
from rayfront.transport.handshake import HandshakeError, client_handshake

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 2.0
#: A replica silent this long (pings unanswered) while calls wait on it is left.
STALL_S = 8.0
#: Answers are model outputs; a peer announcing more than this is broken.
MAX_RESPONSE_BYTES = 1 << 30


def _open_socket(endpoint: Endpoint, use_uds: bool, timeout_s: float) -> socket.socket:
    if use_uds:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout_s)
        try:
            sock.connect(endpoint.uds)
        except OSError:
            sock.close()
            raise
        return sock
    if endpoint.host is None or endpoint.port is None:
        raise OSError(f"{endpoint.describe()} has no TCP address")
    sock = socket.create_connection((endpoint.host, endpoint.port), timeout_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def connect_authenticated(
    endpoint: Endpoint, use_uds: bool, timeout_s: float, arena_fd: int | None = None
) -> socket.socket:
    """A blocking connect plus handshake; the socket is returned still blocking."""
    sock = _open_socket(endpoint, use_uds, timeout_s)
    try:
        client_handshake(sock, endpoint.token, arena_fd=arena_fd if use_uds else None)
    except BaseException:
        sock.close()
        raise
    return sock


def probe(endpoint: Endpoint, local_node_id: str | None = None, timeout_s: float = 0.5) -> bool:
    """Blocking check that the endpoint is a live replica holding its token (off the loop).

    False when nothing listens there, or something else does (a different replica that
    reuses the address fails the handshake).
    """
    try:
        sock = connect_authenticated(endpoint, endpoint.reachable_by_uds(local_node_id), timeout_s)
    except (OSError, HandshakeError):
        return False
    sock.close()
    return True


class TransportClient:
    """One pipelined connection to one replica's transport server.

    ``local_node_id`` is the caller's Ray node: the Unix socket (and the arena) is used
    only when it matches the endpoint's node (with ``None``, whenever the endpoint has one).
    """

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        local_node_id: str | None = None,
        arena: Arena | None = None,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        self.endpoint = endpoint
        self._use_uds = endpoint.reachable_by_uds(local_node_id)
        if not self._use_uds and (endpoint.host is None or endpoint.port is None):
            raise ValueError(
                f"endpoint {endpoint.describe()} has no TCP address and is on node "
                f"{endpoint.node_id!r}, not this node {local_node_id!r}"
            )
        self._arena = arena if self._use_uds else None
        self._connect_timeout_s = connect_timeout_s
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[tuple[TensorDict, RequestMeta]]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._connecting: asyncio.Lock | None = None
        self._alive = False
        self._closed = False
        self._idle: asyncio.Event | None = None
        self._outbox: list[bytes | memoryview] = []
        self._flush_scheduled = False
        self._last_heard = 0.0
        self._watchdog: asyncio.Task[None] | None = None
        self.stall_s = STALL_S

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
                raise ConnectionLost(f"transport to {self.endpoint.describe()} is closed")
            ep = self.endpoint
            arena_fd = self._arena.fd if self._arena is not None else None
            try:
                sock = await asyncio.to_thread(
                    connect_authenticated, ep, self._use_uds, self._connect_timeout_s, arena_fd
                )
            except HandshakeError as exc:
                raise ConnectionLost(
                    f"cannot use {ep.describe()}: {exc}", connect_failed=True
                ) from None
            except OSError as exc:
                reason = "timed out" if isinstance(exc, TimeoutError) else str(exc)
                raise ConnectionLost(
                    f"cannot reach {ep.describe()}: {reason}", connect_failed=True
                ) from None
            sock.settimeout(None)
            sock.setblocking(False)
            if self._use_uds:
                reader, writer = await asyncio.open_unix_connection(sock=sock, limit=1 << 20)
            else:
                reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
            self._writer = writer
            self._alive = True
            self._last_heard = time.monotonic()
            loop = asyncio.get_running_loop()
            self._reader_task = loop.create_task(self._read_loop(reader, writer))
            self._watchdog = loop.create_task(self._watch(writer))
            return writer

    def _send(self, frame: list[bytes | memoryview] | list[bytes]) -> None:
        # Every frame queued in this turn of the loop goes out in one write (one syscall).
        self._outbox.extend(frame)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        writer = self._writer
        if self._outbox and writer is not None and not writer.is_closing():
            writer.writelines(self._outbox)
        self._outbox = []

    async def call(self, inputs: TensorDict, meta: RequestMeta | None = None) -> TensorDict:
        """Run one request on the replica; raises its error, or ConnectionLost."""
        writer = self._writer if self._alive else None
        if writer is None:
            writer = await self._connect()
        request_id = next(self._ids)
        blocks: list[Block] = []
        arena = self._arena

        def place(arr: np.ndarray) -> list[Any] | None:
            if arena is None:
                return None
            block = arena.put(arr)
            if block is None:
                return None
            blocks.append(block)
            return ["a", block.offset]

        try:
            frame = encode_tensors(request_id, KIND_REQUEST, inputs, meta=meta, place=place)
            future: asyncio.Future[tuple[TensorDict, RequestMeta]] = (
                asyncio.get_running_loop().create_future()
            )
            self._pending[request_id] = future
            self._send(frame)
            if buffered(writer) > HIGH_WATER:
                await writer.drain()
            outputs, answer = await future
            if meta is not None and meta.timing is not None and answer.timing is not None:
                meta.timing.fill(answer.timing.to_wire())
            return outputs
        except asyncio.CancelledError:
            if self._alive and request_id in self._pending:
                self._send([encode_cancel(request_id)])
            raise
        except ConnectionError as exc:
            raise ConnectionLost(
                f"connection to {self.endpoint.describe()} failed while sending: {exc}"
            ) from None
        finally:
            self._pending.pop(request_id, None)
            if arena is not None:
                for block in blocks:
                    arena.free(block)
            if not self._pending and self._idle is not None:
                self._idle.set()

    async def _read_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reason = "closed by the replica"
        try:
            while True:
                request_id, kind, header_len, payload = await read_frame(
                    reader, max_body=MAX_RESPONSE_BYTES
                )
                self._last_heard = time.monotonic()
                if kind == KIND_PONG:
                    continue
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
                    future.set_exception(InternalError(f"transport: unexpected frame kind {kind}"))
        except asyncio.IncompleteReadError:
            reason = "closed by the replica"
        except ProtocolError as exc:
            reason = f"protocol error: {exc}"
        except (ConnectionError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
        except asyncio.CancelledError:
            reason = "client closed"
        finally:
            self._fail_pending(f"connection to {self.endpoint.describe()} lost ({reason})")
            writer.close()

    async def _watch(self, writer: asyncio.StreamWriter) -> None:
        """Leave a replica that stops answering while calls wait on it.

        A hung or stopped replica keeps its socket open, so nothing fails by itself: every
        call on it would wait for its client's timeout. With calls outstanding this pings
        every ``stall_s / 4``; the replica's read loop answers at once whatever its batches
        do. Heard nothing for ``stall_s``: the connection is closed, the calls fail with
        ConnectionLost, and the pool retries them on another replica.
        """
        nonce = itertools.count(1)
        period = max(0.05, self.stall_s / 4)
        while self._alive and self._writer is writer:
            await asyncio.sleep(period)
            if not self._pending:
                self._last_heard = time.monotonic()
                continue
            silent = time.monotonic() - self._last_heard
            if silent >= self.stall_s:
                logger.warning(
                    "transport %s: no answer for %.0fs with %d call(s) waiting; leaving it",
                    self.endpoint.describe(),
                    silent,
                    len(self._pending),
                )
                task = self._reader_task
                if task is not None:
                    task.cancel()
                self._fail_pending(
                    f"replica {self.endpoint.describe()} stopped answering "
                    f"({silent:.0f}s without a frame)"
                )
                writer.close()
                return
            if silent >= period:
                self._send([encode_ping(next(nonce))])

    def _fail_pending(self, message: str) -> None:
        self._alive = False
        self._writer = None
        self._outbox = []
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
        if self._watchdog is not None:
            self._watchdog.cancel()
        task = self._reader_task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._fail_pending(f"transport to {self.endpoint.describe()} closed")
