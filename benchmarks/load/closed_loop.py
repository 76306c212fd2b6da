"""The built-in closed-loop load generator: lean asyncio HTTP/1.1 and gRPC clients.

Why not Locust for the sweep: Locust runs its users as gevent greenlets in one process and
spends a few hundred microseconds of Python per request; on a 2-core host that saturates
below the servers being measured, so it would measure itself. This client keeps the per
request cost to one pre-built byte string written on a keep-alive socket and an httptools
(C) response parser, or one pre-serialized protobuf on a grpc.aio channel. Locust users
for the same requests live in ``locustfile.py`` for people who prefer it.

Closed loop: ``concurrency`` workers each send a request, wait for the answer, and send the
next, for ``warmup + duration`` seconds. Only requests that *complete* inside the measured
window count; their latency is from write to last byte. Every failure (non-200, gRPC
status, timeout, reset) is counted, including during warm-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rayfront.benchmarks.load import wire

logger = logging.getLogger(__name__)

Call = Callable[[], Awaitable[None]]
Tick = Callable[[float], None]

CLIENT_DESCRIPTION = (
    "built-in closed-loop asyncio client (HTTP: raw keep-alive sockets + httptools parser; "
    "gRPC: grpc.aio with pre-serialized requests), one process; Locust is not used for the "
    "sweep because its single gevent process saturates below these servers on small hosts"
)

_MAX_ERROR_SAMPLES = 5


class CallError(Exception):
    """One failed request, with the message recorded in the results."""


@dataclass(slots=True)
class LoopResult:
    """Raw outcome of one closed-loop run."""

    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    error_messages: Counter[str] = field(default_factory=Counter)
    duration_s: float = 0.0

    def error_samples(self) -> list[str]:
        return [f"{n}x {msg}" for msg, n in self.error_messages.most_common(_MAX_ERROR_SAMPLES)]


async def closed_loop(
    calls: Sequence[Call],
    duration_s: float,
    warmup_s: float = 0.0,
    on_tick: Tick | None = None,
) -> LoopResult:
    """Drive every call back-to-back in its own worker and measure the window after warm-up."""
    if not calls:
        raise ValueError("closed_loop needs at least one call (concurrency >= 1)")
    result = LoopResult()
    perf = time.perf_counter
    t_start = perf()
    t_measure = t_start + warmup_s
    t_end = t_measure + duration_s
    latencies = result.latencies_s

    async def worker(call: Call) -> None:
        while True:
            t0 = perf()
            if t0 >= t_end:
                return
            try:
                await call()
            except CallError as err:
                result.errors += 1
                result.error_messages[str(err)[:300]] += 1
                # A failing server answers instantly; don't spin the CPU the server needs.
                await asyncio.sleep(0.01)
                continue
            t1 = perf()
            if t_measure <= t1 <= t_end:
                latencies.append(t1 - t0)

    async def ticker() -> None:
        while True:
            await asyncio.sleep(0.25)
            if on_tick is not None:
                on_tick(perf() - t_start)

    tick_task = asyncio.create_task(ticker())
    try:
        await asyncio.gather(*(worker(c) for c in calls))
    finally:
        tick_task.cancel()
    result.duration_s = duration_s
    return result


# --- HTTP/1.1 -----------------------------------------------------------------------------


class _HttpConnection(asyncio.Protocol):
    """One keep-alive connection; responses are parsed by httptools as bytes arrive."""

    def __init__(self) -> None:
        import httptools

        self._parser = httptools.HttpResponseParser(self)
        self._parser_error = httptools.HttpParserError
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, bytes, int | None]] | None = None
        self._body: list[bytes] = []
        self._header_length: int | None = None
        self.closed = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except self._parser_error as err:
            self._fail(CallError(f"bad HTTP response: {err}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(CallError(f"connection closed by server ({exc or 'EOF'})"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._body = []
        self._header_length = None

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"inference-header-content-length":
            self._header_length = int(value)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            status = self._parser.get_status_code()
            waiter.set_result((status, b"".join(self._body), self._header_length))
        if not self._parser.should_keep_alive():
            self.close()

    def _fail(self, err: CallError) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(err)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


ResponseCheck = Callable[[bytes, int | None], None]


class HttpCaller:
    """Re-sends one pre-built request on its own keep-alive connection; reconnects on failure."""

    def __init__(
        self,
        host: str,
        port: int,
        request: bytes,
        timeout_s: float,
        check: ResponseCheck | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.request = request
        self.timeout_s = timeout_s
        self.check = check
        self._checked = False
        self._conn: _HttpConnection | None = None

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(_HttpConnection, self.host, self.port)
        except OSError as err:
            raise CallError(f"cannot connect to {self.host}:{self.port}: {err}") from None
        self._conn = conn

    async def __call__(self) -> None:
        if self._conn is None or self._conn.closed:
            await self.connect()
        conn = self._conn
        if conn is None or conn.transport is None:
            raise CallError(f"no connection to {self.host}:{self.port}")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[int, bytes, int | None]] = loop.create_future()
        conn.waiter = fut
        # A TimerHandle is cheaper than asyncio.timeout() on the hot path.
        timer = loop.call_later(self.timeout_s, _expire, fut, self.timeout_s)
        conn.transport.write(self.request)
        try:
            status, body, header_length = await fut
        except CallError:
            conn.close()
            raise
        finally:
            timer.cancel()
        if status != 200:
            raise CallError(f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}")
        if not self._checked and self.check is not None:
            self.check(body, header_length)
            self._checked = True

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def _expire(fut: asyncio.Future[Any], timeout_s: float) -> None:
    if not fut.done():
        fut.set_exception(CallError(f"no answer within {timeout_s:.0f}s"))


def response_check(output: str, rows: int) -> ResponseCheck:
    """A check that the answer decodes and ``output`` has ``rows`` rows (first answer only)."""

    def check(body: bytes, header_length: int | None) -> None:
        try:
            decoded = wire.decode_body(body, header_length, "response")
        except (ValueError, KeyError, TypeError) as err:
            raise CallError(f"undecodable response: {err}") from None
        arr = decoded.tensors.get(output)
        if arr is None:
            raise CallError(f"response has no output {output!r}: {sorted(decoded.tensors)}")
        if arr.shape[:1] != (rows,):
            raise CallError(f"output {output!r} has shape {list(arr.shape)}, expected {rows} rows")

    return check


async def http_point(
    host: str,
    port: int,
    request: bytes,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    timeout_s: float,
    check: ResponseCheck | None = None,
    on_tick: Tick | None = None,
) -> LoopResult:
    """One closed-loop HTTP run with ``concurrency`` keep-alive connections."""
    callers = [HttpCaller(host, port, request, timeout_s, check) for _ in range(concurrency)]
    try:
        # Connect up front so connection setup is not inside the measurement.
        for c in callers:
            # A refused connection is counted as an error on the first call instead.
            with contextlib.suppress(CallError):
                await c.connect()
        return await closed_loop(callers, duration_s, warmup_s, on_tick)
    finally:
        for c in callers:
            c.close()


async def http_requests_point(
    host: str,
    port: int,
    requests: Sequence[bytes],
    duration_s: float,
    warmup_s: float,
    timeout_s: float,
    check: ResponseCheck | None = None,
    on_tick: Tick | None = None,
) -> LoopResult:
    """Like :func:`http_point`, but each connection re-sends its own request (one per entry),
    e.g. a shared-memory request naming that connection's own output region."""
    callers = [HttpCaller(host, port, r, timeout_s, check) for r in requests]
    try:
        for c in callers:
            with contextlib.suppress(CallError):
                await c.connect()
        return await closed_loop(callers, duration_s, warmup_s, on_tick)
    finally:
        for c in callers:
            c.close()


# --- gRPC ---------------------------------------------------------------------------------


class GrpcCaller:
    """Sends one pre-serialized ``ModelInferRequest`` per call on a shared grpc.aio channel."""

    def __init__(
        self, method: Any, payload: bytes, timeout_s: float, output: str, rows: int
    ) -> None:
        self.method = method
        self.payload = payload
        self.timeout_s = timeout_s
        self.output = output
        self.rows = rows
        self._checked = False

    async def __call__(self) -> None:
        import grpc

        try:
            answer = await self.method(self.payload, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as err:
            raise CallError(f"gRPC {err.code().name}: {err.details()}") from None
        if not self._checked:
            try:
                outputs = wire.grpc_decode_response(answer)
            except (ValueError, KeyError, TypeError) as err:
                raise CallError(f"undecodable gRPC response: {err}") from None
            arr = outputs.get(self.output)
            if arr is None or arr.shape[:1] != (self.rows,):
                raise CallError(
                    f"gRPC response output {self.output!r}: got "
                    f"{None if arr is None else list(arr.shape)}, expected {self.rows} rows"
                )
            self._checked = True


def grpc_channel_options() -> list[tuple[str, Any]]:
    """Unbounded message sizes and one connection per channel (no shared subchannel pool)."""
    return [
        ("grpc.max_send_message_length", -1),
        ("grpc.max_receive_message_length", -1),
        ("grpc.use_local_subchannel_pool", 1),
    ]


async def grpc_point(
    host: str,
    port: int,
    payload: bytes,
    output: str,
    rows: int,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    timeout_s: float,
    channels: int = 4,
    on_tick: Tick | None = None,
) -> LoopResult:
    """One closed-loop gRPC run; workers share ``channels`` HTTP/2 connections round-robin."""
    import grpc

    n = max(1, min(channels, concurrency))
    opened = [
        grpc.aio.insecure_channel(f"{host}:{port}", options=grpc_channel_options())
        for _ in range(n)
    ]
    try:
        # No serializer: the payload is already bytes, the answer stays bytes until checked.
        methods = [
            ch.unary_unary(
                wire.GRPC_INFER_METHOD, request_serializer=None, response_deserializer=None
            )
            for ch in opened
        ]
        for ch in opened:
            try:
                await asyncio.wait_for(ch.channel_ready(), timeout=timeout_s)
            except TimeoutError:
                logger.warning("gRPC channel to %s:%d not ready after %.0fs", host, port, timeout_s)
        callers = [
            GrpcCaller(methods[i % n], payload, timeout_s, output, rows) for i in range(concurrency)
        ]
        return await closed_loop(callers, duration_s, warmup_s, on_tick)
    finally:
        for ch in opened:
            await ch.close()


# --- running a point from sync code -------------------------------------------------------


def run_async(coro: Awaitable[LoopResult], use_uvloop: bool = True) -> LoopResult:
    """Run one point on a fresh event loop (uvloop for HTTP when installed)."""
    factory = None
    if use_uvloop:
        try:
            import uvloop

            factory = uvloop.new_event_loop
        except ImportError:
            factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)  # type: ignore[arg-type]


def percentiles_ms(latencies_s: Sequence[float], qs: Sequence[float]) -> list[float]:
    """Latency percentiles in ms (helper for quick checks and tests)."""
    if not latencies_s:
        return [float("nan")] * len(qs)
    return [float(v) for v in np.percentile(np.asarray(latencies_s) * 1000.0, list(qs))]
