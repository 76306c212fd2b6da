"""The replica side of the transport: accept connections, run each request frame, answer.

A connection opens with a HELLO carrying the endpoint's token (published with the
endpoint in the directory, which Ray's own authentication guards under Serve), so only
an ingress of this cluster can send work, and a stale endpoint can never reach a
different replica that happens to reuse the address. A connection is pipelined: many
requests in flight, answers matched by id in whatever order they finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import secrets
from collections.abc import Awaitable, Callable

from rayfront.errors import RayfrontError
from rayfront.tensors import TensorDict
from rayfront.transport.discovery import Endpoint
from rayfront.transport.frames import (
    FRAME,
    HIGH_WATER,
    KIND_HELLO,
    KIND_REQUEST,
    KIND_RESPONSE,
    buffered,
    decode_tensors,
    encode_error,
    encode_tensors,
    read_frame,
    wire_error_name,
)

logger = logging.getLogger(__name__)

Execute = Callable[[TensorDict], Awaitable[TensorDict]]

# sun_path is 108 bytes on Linux; a longer path fails at bind time with a vague error.
_MAX_UDS_PATH = 107


class TransportServer:
    """Serves ``execute(tensors) -> tensors`` to transport clients.

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
            raise ValueError("TransportServer.start needs a uds_path, a host, or both")
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
            _, kind, header_len, payload = await read_frame(reader)
            token = payload[:header_len]
            if kind != KIND_HELLO or not hmac.compare_digest(token, self._token.encode()):
                logger.warning(
                    "fast path %s: refused a connection without the endpoint's token", self.name
                )
                return
            writer.write(FRAME.pack(0, KIND_HELLO, 0, 0))
            while True:
                request_id, kind, header_len, payload = await read_frame(reader)
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
                frame = encode_error(request_id, wire_error_name(exc), exc.message)
            except Exception as exc:
                # The client sees the class name only; the traceback stays in this log.
                logger.exception("fast path %s: execution failed", self.name)
                frame = encode_error(
                    request_id, "InternalError", f"model execution failed: {type(exc).__name__}"
                )
            if writer.is_closing():
                return
            writer.writelines(frame)
            if buffered(writer) > HIGH_WATER:
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
            if not writer.is_closing() and buffered(writer):
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
            writer.close()
        self._writers.clear()
        if self._uds is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._uds)
        logger.info("fast path %s closed", self.name)
