"""The closed-loop client against in-process fakes: an asyncio HTTP server and a grpc.aio server."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from rayfront.benchmarks.load import closed_loop as client
from rayfront.benchmarks.load import wire


def test_closed_loop_counts_errors_and_measures_only_after_warmup() -> None:
    calls = 0

    async def ok() -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.001)

    async def bad() -> None:
        raise client.CallError("HTTP 503: busy")

    result = asyncio.run(client.closed_loop([ok, ok, bad], duration_s=0.3, warmup_s=0.1))
    assert 0 < len(result.latencies_s) < calls  # warm-up requests are not counted
    assert result.errors > 0
    assert result.error_samples()[0].endswith("x HTTP 503: busy")
    assert result.duration_s == 0.3


def test_closed_loop_raises_when_no_calls() -> None:
    with pytest.raises(ValueError, match="at least one call"):
        asyncio.run(client.closed_loop([], 0.1))


async def _serve_http(
    status: int, body: bytes, head_len: int | None, close_after: int = 0
) -> tuple[asyncio.Server, int]:
    served = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(
                    next(
                        ln.split(b":")[1]
                        for ln in head.split(b"\r\n")
                        if ln.lower().startswith(b"content-length")
                    )
                )
                await reader.readexactly(length)
                served += 1
                extra = (
                    f"Inference-Header-Content-Length: {head_len}\r\n"
                    if head_len is not None
                    else ""
                )
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode()
                    + body
                )
                await writer.drain()
                if close_after and served % close_after == 0:
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _request(port: int) -> bytes:
    body, head_len = wire.encode_infer_body({"x": np.zeros((2, 4), np.float32)}, ["y"])
    return wire.build_http_request("127.0.0.1", port, "/v2/models/m/infer", body, head_len)


def test_http_point_succeeds_when_server_answers_binary_tensors() -> None:
    async def run() -> client.LoopResult:
        body, head_len = wire.encode_response_body("m", "1", {"y": np.ones((2, 3), np.float32)})
        server, port = await _serve_http(200, body, head_len)
        async with server:
            return await client.http_point(
                "127.0.0.1", port, _request(port), 2, 0.3, 0.05, 5.0, client.response_check("y", 2)
            )

    result = asyncio.run(run())
    assert result.errors == 0
    assert len(result.latencies_s) > 10


def test_http_point_counts_errors_when_server_answers_wrong_rows() -> None:
    async def run() -> client.LoopResult:
        body, head_len = wire.encode_response_body("m", "1", {"y": np.ones((5, 3), np.float32)})
        server, port = await _serve_http(200, body, head_len)
        async with server:
            return await client.http_point(
                "127.0.0.1", port, _request(port), 1, 0.2, 0.0, 5.0, client.response_check("y", 2)
            )

    result = asyncio.run(run())
    assert result.errors > 0
    assert "output 'y' has shape [5, 3], expected 2 rows" in result.error_samples()[0]


def test_http_point_counts_errors_when_status_is_not_200() -> None:
    async def run() -> client.LoopResult:
        server, port = await _serve_http(503, b'{"error":"queue is full"}', None)
        async with server:
            return await client.http_point("127.0.0.1", port, _request(port), 1, 0.2, 0.0, 5.0)

    result = asyncio.run(run())
    assert result.errors > 0 and not result.latencies_s
    assert 'HTTP 503: {"error":"queue is full"}' in result.error_samples()[0]


def test_http_point_reconnects_when_server_closes_connections() -> None:
    async def run() -> client.LoopResult:
        body, head_len = wire.encode_response_body("m", "1", {"y": np.ones((2, 3), np.float32)})
        server, port = await _serve_http(200, body, head_len, close_after=3)
        async with server:
            return await client.http_point("127.0.0.1", port, _request(port), 2, 0.3, 0.0, 5.0)

    result = asyncio.run(run())
    assert len(result.latencies_s) > 10


def test_http_point_counts_errors_when_nothing_listens() -> None:
    from rayfront.benchmarks.run.procs import free_port

    port = free_port()
    result = asyncio.run(client.http_point("127.0.0.1", port, _request(port), 1, 0.1, 0.0, 1.0))
    assert result.errors > 0
    assert "cannot connect to 127.0.0.1" in result.error_samples()[0]


def test_grpc_point_succeeds_when_server_implements_model_infer() -> None:
    import grpc
    from tritonclient.grpc import service_pb2

    async def infer(
        request: service_pb2.ModelInferRequest, context: object
    ) -> service_pb2.ModelInferResponse:
        rows = request.inputs[0].shape[0]
        resp = service_pb2.ModelInferResponse(model_name=request.model_name)
        out = resp.outputs.add()
        out.name, out.datatype = "y", "FP32"
        out.shape.extend([rows, 3])
        resp.raw_output_contents.append(np.zeros((rows, 3), np.float32).tobytes())
        return resp

    async def run() -> client.LoopResult:
        server = grpc.aio.server()
        handler = grpc.method_handlers_generic_handler(
            "inference.GRPCInferenceService",
            {
                "ModelInfer": grpc.unary_unary_rpc_method_handler(
                    infer,
                    request_deserializer=service_pb2.ModelInferRequest.FromString,
                    response_serializer=service_pb2.ModelInferResponse.SerializeToString,
                )
            },
        )
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            payload = wire.grpc_infer_request("m", {"x": np.zeros((2, 4), np.float32)})
            return await client.grpc_point(
                "127.0.0.1", port, payload, "y", 2, 3, 0.3, 0.05, 5.0, channels=2
            )
        finally:
            await server.stop(None)

    result = asyncio.run(run())
    assert result.errors == 0
    assert len(result.latencies_s) > 5
