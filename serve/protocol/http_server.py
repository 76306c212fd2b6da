"""The HTTP listener: uvicorn + httptools, with the limits a public port needs.

uvicorn's httptools protocol has no cap on header size and no deadline for a request
that is still arriving: a client could send 64 MiB of headers, or hold hundreds of
connections open by trickling bytes (slowloris), and every one of them costs memory and a
file descriptor. :class:`GuardedHttpToolsProtocol` adds, per connection:

* a header cap (:attr:`HttpLimits.max_header_bytes`, request line included): past it the
  client gets ``431`` and the connection closes;
* a deadline for the request head (``header_timeout_s``), armed when the connection opens
  and whenever a new request starts, so a connection that never completes its headers
  is closed with ``408``;
* a deadline for the body (``body_timeout_s``) once the head is in: a body that stops
  arriving ends the request (the app sees a disconnect) and closes the connection.

A request whose body is complete is not timed here: its duration is the application's
(queue timeouts, model time). Idle keep-alive connections are closed by uvicorn's own
``timeout_keep_alive``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HttpLimits:
    """Per-connection limits of the HTTP listener."""

    max_header_bytes: int = 64 * 1024
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    keep_alive_s: float = 75.0
    max_connections: int | None = None  # uvicorn's limit_concurrency (503 beyond it)
    # Bodies with a Content-Length up to this are gathered whole (see _WholeBodyCycle).
    max_body_bytes: int = 64 * 1024 * 1024


#: Bodies smaller than this take uvicorn's ordinary path (the copies are cheap there).
WHOLE_BODY_MIN = 16 * 1024


class _WholeBodyCycle(RequestResponseCycle):
    """A request cycle whose body the protocol gathers into one preallocated buffer.

    uvicorn copies a body three times on its way to the app (into the cycle's bytearray,
    out of it as ``bytes`` per ``receive``, and the app joins the pieces); for a 600 KB
    image that was a quarter of the ingress's CPU. Here each arriving chunk is appended
    once to one ``bytearray``, and ``receive`` hands that buffer over in one message. (A bytearray, not bytes: the app reads it through
    memoryviews, as every consumer of request bodies in rayfront does.)
    """

    whole: bytearray | None = None
    pending: bool = True

    async def receive(self) -> Any:
        if not self.pending:
            return await super().receive()
        if not self.disconnected and not self.response_complete:
            await self.message_event.wait()
            self.message_event.clear()
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        body, self.whole, self.pending = self.whole, None, False
        return {"type": "http.request", "body": body, "more_body": False}


def _status(code: int, reason: str, message: str) -> bytes:
    body = message.encode()
    return (
        f"HTTP/1.1 {code} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header cap and head/body deadlines."""

    limits: HttpLimits = HttpLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._in_head = False
        self._in_body = False
        self._buf: bytearray | None = None

    # -- deadlines ---------------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport is None or self.transport.is_closing():
            return
        if self._in_body:
            logger.info("closing %s: request body incomplete after %.0fs", self.client,
                        self.limits.body_timeout_s)  # fmt: skip
            # The app is waiting in receive(): closing makes it see a disconnect.
            self.transport.close()
            return
        if self._in_head:
            self.transport.write(
                _status(408, "Request Timeout", "request headers not received in time")
            )
        self.transport.close()

    # -- connection and parser callbacks -------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A connection that never sends a request is closed like one stuck in its headers.
        self._in_head = True
        self._arm(self.limits.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # httptools buffers a header line until it ends, so count what arrives, not what
        # it has parsed: bytes received since the last head completed.
        if not self._in_body:
            self._head_bytes += len(data)
        super().data_received(data)
        if (
            not self._in_body
            and self._head_bytes > self.limits.max_header_bytes
            and not self.transport.is_closing()
        ):
            self._disarm()
            self.transport.write(
                _status(
                    431,
                    "Request Header Fields Too Large",
                    f"request headers exceed {self.limits.max_header_bytes} bytes",
                )
            )
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._in_body = True, False
        self._arm(self.limits.header_timeout_s)

    def on_headers_complete(self) -> None:
        self._in_head, self._in_body = False, True
        self._head_bytes = 0
        self._arm(self.limits.body_timeout_s)
        super().on_headers_complete()
        self._buf = None
        length = self._content_length()
        cycle = self.cycle
        if (
            cycle is not None
            and WHOLE_BODY_MIN <= length <= self.limits.max_body_bytes
            and not self.expect_100_continue
            and type(cycle) is RequestResponseCycle
        ):
            cycle.__class__ = _WholeBodyCycle
            # Grown as bytes arrive (not preallocated): a client that announces 64 MiB and
            # sends nothing must not cost 64 MiB.
            self._buf = bytearray()

    def _content_length(self) -> int:
        for name, value in self.headers:
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return -1
        return -1

    def on_body(self, body: bytes) -> None:
        buf = self._buf
        if buf is None:
            super().on_body(body)
            return
        if self.cycle.response_complete:
            return
        buf += body

    def on_message_complete(self) -> None:
        self._in_body = False
        self._disarm()
        buf, self._buf = self._buf, None
        if buf is None:
            super().on_message_complete()
            return
        cycle = self.cycle
        if cycle.response_complete:
            return
        cycle.whole = buf  # type: ignore[attr-defined]
        cycle.more_body = False
        cycle.message_event.set()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Between requests uvicorn's keep-alive timer governs; ours restarts with the next.
        self._disarm()


def protocol_class(limits: HttpLimits) -> type[GuardedHttpToolsProtocol]:
    """A protocol class bound to ``limits`` (uvicorn instantiates it per connection)."""
    return type("GuardedHttp", (GuardedHttpToolsProtocol,), {"limits": limits})


def uvicorn_server(app: Any, limits: HttpLimits | None = None, **extra: Any) -> Any:
    """A ``uvicorn.Server`` for ``app`` on the current loop, with rayfront's limits."""
    import uvicorn

    limits = limits or HttpLimits()
    config = uvicorn.Config(
        app,
        loop="none",
        http=protocol_class(limits),
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=int(limits.keep_alive_s),
        h11_max_incomplete_event_size=limits.max_header_bytes,
        # No dictConfig: it closes every handler of the process, and in a Serve replica that
        # leaves Serve's own log handler without a target; the next controller (after a
        # restart) then fails to recover the replica and replaces it.
        log_config=None,
        limit_concurrency=limits.max_connections,
        **extra,
    )
    return uvicorn.Server(config)


def serve_socket(server: Any, sock: socket.socket) -> asyncio.Task[None]:
    """Start ``server`` on an already bound, listening socket."""
    return asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
