"""The replica side of the transport: accept, authenticate, run each request, answer.

A connection first passes the mutual handshake (:mod:`rayfront.transport.handshake`) in
a worker thread, within a deadline, reading only a few hundred bytes; nothing else is
read from a peer that has not proved itself. Connections are capped, and an
authenticated connection with nothing in flight is closed after an idle timeout (its
client reconnects on its next call). Unix sockets are created with mode 0600 inside a
private 0700 directory (:func:`rayfront.transport.discovery.private_socket_path`).

A connection is pipelined: many requests in flight, answers matched by id in whatever
order they finish, and written together when several finish in one turn of the loop. A
CANCEL frame cancels its request, which drops it from the batcher's queue if it is still
waiting there.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import socket
import stat
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from rayfront.errors import InvalidArgumentError, RayfrontError
from rayfront.tensors import FileRef, TensorDict
from rayfront.transport.arena import ArenaMap
from rayfront.transport.discovery import Endpoint
from rayfront.transport.frames import (
    HIGH_WATER,
    KIND_CANCEL,
    KIND_PING,
    KIND_REQUEST,
    KIND_RESPONSE,
    ProtocolError,
    RequestMeta,
    buffered,
    decode_tensors,
    encode_error,
    encode_pong,
    encode_tensors,
    read_frame,
    wire_error_name,
)
from rayfront.transport.handshake import HandshakeError, server_handshake

logger = logging.getLogger(__name__)

Handler = Callable[[TensorDict, RequestMeta], Awaitable[TensorDict]]

# sun_path is 108 bytes on Linux; a longer path fails at bind time with a vague error.
_MAX_UDS_PATH = 107
#: Client shared-memory regions a replica reads must live here (POSIX shm_open's home).
SHM_ROOT = "/dev/shm/"


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What one replica's transport server allows a peer."""

    max_connections: int = 512
    handshake_timeout_s: float = 5.0
    idle_timeout_s: float = 600.0
    max_frame_bytes: int = 256 * 1024 * 1024
    handshake_threads: int = 8


class _FileCache:
    """Client shared-memory regions this replica has open, by (path, device, inode)."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._files: OrderedDict[tuple[str, int, int], FileRef] = OrderedDict()

    def open(self, path: str, dev: int, ino: int) -> FileRef:
        key = (path, dev, ino)
        ref = self._files.get(key)
        if ref is not None:
            self._files.move_to_end(key)
            return ref
        real = os.path.normpath(path)
        if not real.startswith(SHM_ROOT) or real != path:
            raise InvalidArgumentError(f"shared memory path {path!r} is not under {SHM_ROOT}")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise InvalidArgumentError(
                f"shared memory {path!r} cannot be opened: {exc.strerror}"
            ) from None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (dev, ino) or not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise InvalidArgumentError(
                f"shared memory {path!r} was replaced since it was registered; register it again"
            )
        ref = FileRef(fd, path)
        self._files[key] = ref
        while len(self._files) > self._size:
            self._files.popitem(last=False)
        return ref


class _Connection:
    """One authenticated peer: its writer, arena map, requests in flight and pending answers."""

    __slots__ = ("arena", "last_active", "outbox", "scheduled", "tasks", "writer")

    def __init__(self, writer: asyncio.StreamWriter, arena: ArenaMap | None) -> None:
        self.writer = writer
        self.arena = arena
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.outbox: list[bytes | memoryview] = []
        self.scheduled = False
        self.last_active = time.monotonic()

    def send(self, frame: list[bytes | memoryview]) -> None:
        """Queue a frame; every frame queued in this turn of the loop goes in one write."""
        self.outbox.extend(frame)
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self.scheduled = False
        if self.outbox and not self.writer.is_closing():
            self.writer.writelines(self.outbox)
        self.outbox = []


class TransportServer:
    """Serves ``handler(tensors, meta) -> tensors`` to authenticated transport clients.

    The handler decides the concurrency (a replica's batcher queues and batches).
    """

    def __init__(
        self,
        handler: Handler,
        *,
        name: str = "",
        token: str | None = None,
        limits: ServerLimits | None = None,
    ) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be an async callable, got {type(handler).__name__}")
        self._handler = handler
        self.name = name
        self.limits = limits or ServerLimits()
        self._token = secrets.token_hex(16) if token is None else token
        self._listeners: list[socket.socket] = []
        self._accept_tasks: list[asyncio.Task[None]] = []
        self._connections: set[_Connection] = set()
        self._conn_tasks: set[asyncio.Task[None]] = set()
        self._pending_handshakes = 0
        self._handshakes = ThreadPoolExecutor(
            max_workers=self.limits.handshake_threads, thread_name_prefix="rf-handshake"
        )
        self._files = _FileCache()
        self._inflight = 0
        self._idle: asyncio.Event | None = None
        self._closing = False
        self._uds: str | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self.endpoint: Endpoint | None = None
        self.refused = 0

    @property
    def inflight(self) -> int:
        """Requests received and not yet answered."""
        return self._inflight

    @property
    def connections(self) -> int:
        return len(self._connections) + self._pending_handshakes

    async def start(
        self,
        *,
        uds_path: str | None = None,
        host: str | None = None,
        port: int = 0,
        node_id: str = "",
        replica: str = "",
    ) -> Endpoint:
        """Listen on a Unix socket and/or TCP; returns where clients can connect."""
        if uds_path is None and host is None:
            raise ValueError("TransportServer.start needs a uds_path, a host, or both")
        loop = asyncio.get_running_loop()
        tcp_port: int | None = None
        if uds_path is not None:
            if len(uds_path.encode()) > _MAX_UDS_PATH:
                raise ValueError(
                    f"unix socket path {uds_path!r} is {len(uds_path.encode())} bytes; "
                    f"the limit is {_MAX_UDS_PATH}: choose a shorter directory"
                )
            with contextlib.suppress(FileNotFoundError):
                os.unlink(uds_path)  # left behind by a killed process
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(uds_path)
            # The directory is already ours alone (0700); the socket need not be wider.
            os.chmod(uds_path, 0o600)
            self._uds = uds_path
            self._listen(sock, loop, is_uds=True)
        if host is not None:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            tcp_port = sock.getsockname()[1]
            self._listen(sock, loop, is_uds=False)
        self._watchdog = loop.create_task(self._watch_idle())
        self.endpoint = Endpoint(
            node_id=node_id,
            uds=uds_path,
            host=host,
            port=tcp_port,
            pid=os.getpid(),
            replica=replica,
            token=self._token,
        )
        logger.info("transport %s listening: %s", self.name, self.endpoint.describe())
        return self.endpoint

    def _listen(
        self, sock: socket.socket, loop: asyncio.AbstractEventLoop, *, is_uds: bool
    ) -> None:
        sock.listen(1024)
        sock.setblocking(False)
        self._listeners.append(sock)
        self._accept_tasks.append(loop.create_task(self._accept(sock, is_uds=is_uds)))

    async def _accept(self, listener: socket.socket, *, is_uds: bool) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            try:
                conn, _ = await loop.sock_accept(listener)
            except (OSError, asyncio.CancelledError):
                return
            if self.connections >= self.limits.max_connections:
                self.refused += 1
                if self.refused == 1 or self.refused % 100 == 0:
                    logger.warning(
                        "transport %s: %d connections open, refusing more (%d refused so far)",
                        self.name,
                        self.connections,
                        self.refused,
                    )
                conn.close()
                continue
            if not is_uds:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # Counted from the accept, not from when the task first runs, so a burst of
            # connections cannot slip past the cap.
            self._pending_handshakes += 1
            task = loop.create_task(self._serve(conn, is_uds=is_uds))
            self._conn_tasks.add(task)
            task.add_done_callback(self._conn_tasks.discard)

    async def _serve(self, conn: socket.socket, *, is_uds: bool) -> None:
        loop = asyncio.get_running_loop()
        try:
            conn.setblocking(True)
            conn.settimeout(self.limits.handshake_timeout_s)
            side = await loop.run_in_executor(
                self._handshakes,
                functools.partial(server_handshake, conn, self._token, accept_fd=is_uds),
            )
        except (HandshakeError, OSError) as exc:
            logger.warning("transport %s: refused a connection: %s", self.name, exc)
            conn.close()
            return
        finally:
            self._pending_handshakes -= 1
        arena: ArenaMap | None = None
        try:
            if side.arena_fd is not None:
                arena = ArenaMap(side.arena_fd)
            conn.settimeout(None)
            conn.setblocking(False)
            if is_uds:
                reader, writer = await asyncio.open_unix_connection(sock=conn, limit=1 << 20)
            else:
                reader, writer = await asyncio.open_connection(sock=conn, limit=1 << 20)
        except (RayfrontError, OSError) as exc:
            logger.warning("transport %s: could not set up a connection: %s", self.name, exc)
            conn.close()
            return
        peer = _Connection(writer, arena)
        self._connections.add(peer)
        try:
            await self._read_loop(reader, peer)
        finally:
            self._connections.discard(peer)
            for task in list(peer.tasks.values()):
                task.cancel()  # the client went away; nobody can receive these answers
            writer.close()

    async def _read_loop(self, reader: asyncio.StreamReader, peer: _Connection) -> None:
        loop = asyncio.get_running_loop()
        max_body = self.limits.max_frame_bytes
        arena = peer.arena
        try:
            while True:
                request_id, kind, header_len, payload = await read_frame(reader, max_body=max_body)
                peer.last_active = time.monotonic()
                if kind == KIND_CANCEL:
                    task = peer.tasks.get(request_id)
                    if task is not None:
                        task.cancel()
                    continue
                if kind == KIND_PING:
                    peer.send([encode_pong(request_id)])
                    continue
                if kind != KIND_REQUEST:
                    raise ProtocolError(f"unexpected frame kind {kind}")
                if self._closing:
                    peer.send(
                        encode_error(
                            request_id,
                            "UnavailableError",
                            f"replica of {self.name} is shutting down; retry on another replica",
                            retryable=True,
                        )
                    )
                    continue
                self._inflight += 1
                task = loop.create_task(self._run(peer, request_id, header_len, payload, arena))
                peer.tasks[request_id] = task
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away
        except ProtocolError as exc:
            logger.warning("transport %s: closing a connection: %s", self.name, exc)
        except asyncio.CancelledError:
            pass  # the loop's teardown

    async def _run(
        self,
        peer: _Connection,
        request_id: int,
        header_len: int,
        payload: bytes,
        arena: ArenaMap | None,
    ) -> None:
        try:
            try:
                inputs, meta = decode_tensors(
                    payload, header_len, arena=arena, open_file=self._files.open
                )
                outputs = await self._handler(inputs, meta)
                answer = meta if meta.timing is not None else None
                frame = encode_tensors(request_id, KIND_RESPONSE, outputs, meta=answer)
            except asyncio.CancelledError:
                return  # cancelled by the client (CANCEL or gone): nobody waits for an answer
            except RayfrontError as exc:
                frame = encode_error(request_id, wire_error_name(exc), exc.message)
            except Exception as exc:
                # The client sees the class name only; the traceback stays in this log.
                logger.exception("transport %s: execution failed", self.name)
                frame = encode_error(
                    request_id, "InternalError", f"model execution failed: {type(exc).__name__}"
                )
            peer.send(frame)
            if buffered(peer.writer) > HIGH_WATER:
                with contextlib.suppress(ConnectionError):
                    await peer.writer.drain()
        finally:
            peer.tasks.pop(request_id, None)
            peer.last_active = time.monotonic()
            self._inflight -= 1
            if self._inflight == 0 and self._idle is not None:
                self._idle.set()

    async def _watch_idle(self) -> None:
        period = max(0.05, min(5.0, self.limits.idle_timeout_s / 4))
        while True:
            await asyncio.sleep(period)
            cutoff = time.monotonic() - self.limits.idle_timeout_s
            for peer in list(self._connections):
                if not peer.tasks and peer.last_active < cutoff:
                    peer.writer.close()

    async def close(self, timeout_s: float | None = None) -> None:
        """Stop accepting, answer everything in flight (new requests get a retryable error)."""
        if self._closing:
            return
        self._closing = True
        for task in self._accept_tasks:
            task.cancel()
        for sock in self._listeners:
            sock.close()
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._inflight:
            self._idle = asyncio.Event()
            try:
                async with asyncio.timeout(timeout_s):
                    await self._idle.wait()
            except TimeoutError:
                logger.warning(
                    "transport %s: %d requests still running after %.0fs; closing anyway",
                    self.name,
                    self._inflight,
                    timeout_s,
                )
        for peer in list(self._connections):
            peer.flush()
            if not peer.writer.is_closing() and buffered(peer.writer):
                with contextlib.suppress(ConnectionError):
                    await peer.writer.drain()
            peer.writer.close()
        self._connections.clear()
        self._handshakes.shutdown(wait=False, cancel_futures=True)
        if self._uds is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._uds)
        logger.info("transport %s closed", self.name)
