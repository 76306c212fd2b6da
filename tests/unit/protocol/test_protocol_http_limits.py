"""The HTTP listener's guards against cheap attacks: header cap, slow heads, stalled bodies.

Against the real uvicorn listener the gateway runs (``uvicorn_server``) with the short
deadlines of ``HTTP_LIMITS``, over raw sockets, because well-behaved clients cannot send
what these tests send.
"""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest
import tritonclient.http as httpclient
from protocol_fakes import HTTP_LIMITS

READ_S = HTTP_LIMITS.header_timeout_s + 3.0


def _connect(servers) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", servers.http_port), timeout=READ_S)
    sock.settimeout(READ_S)
    return sock


def _read_until_closed(sock: socket.socket) -> tuple[bytes, bool]:
    """Everything until the server closes; and whether it did close (not a read timeout)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except TimeoutError:
        return b"".join(chunks), False
    except ConnectionResetError:
        pass
    return b"".join(chunks), True


def _read_all(sock: socket.socket) -> bytes:
    data, closed = _read_until_closed(sock)
    assert closed, f"the server kept the connection open; got {data[:80]!r}"
    return data


def _check_serving(servers) -> None:
    client = httpclient.InferenceServerClient(servers.http_url, network_timeout=10)
    a = np.ones((1, 4), np.float32)
    ins = []
    for name in ("INPUT0", "INPUT1"):
        i = httpclient.InferInput(name, [1, 4], "FP32")
        i.set_data_from_numpy(a)
        ins.append(i)
    np.testing.assert_array_equal(client.infer("add", ins).as_numpy("OUTPUT0"), a * 2)
    client.close()


def test_http_refuses_431_and_closes_when_headers_exceed_cap(servers):
    sock = _connect(servers)
    try:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
        filler = b"X-Pad: " + b"a" * 1000 + b"\r\n"
        sent = 0
        try:
            while sent < 4 * HTTP_LIMITS.max_header_bytes:
                sock.sendall(filler)
                sent += len(filler)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed early, as it should
        answer = _read_all(sock)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert b"request headers exceed 16384 bytes" in answer
    _check_serving(servers)


def test_http_refuses_431_when_one_header_line_never_ends(servers):
    # httptools buffers a header value until its line ends: count bytes, not headers.
    sock = _connect(servers)
    try:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nX-Long: ")
        try:
            for _ in range(64):
                sock.sendall(b"b" * 1024)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = _read_all(sock)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 431 ")


def test_http_times_out_408_when_headers_trickle_in(servers):
    sock = _connect(servers)
    start = time.monotonic()
    try:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\n")
        try:
            # Slowloris: a byte at a time, never finishing the head.
            for _ in range(int(HTTP_LIMITS.header_timeout_s * 10) + 20):
                sock.sendall(b"X")
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = _read_all(sock)
    finally:
        sock.close()
    elapsed = time.monotonic() - start
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
    assert elapsed < HTTP_LIMITS.header_timeout_s + 2.5


def test_http_closes_connections_that_never_send_a_request(servers):
    socks = [_connect(servers) for _ in range(50)]
    start = time.monotonic()
    try:
        answers = [_read_until_closed(s) for s in socks]
        elapsed = time.monotonic() - start
    finally:
        for s in socks:
            s.close()
    assert all(closed for _, closed in answers)
    # Nothing was asked, so nothing but a 408 (or a bare close) comes back.
    assert all(data in (b"",) or data.startswith(b"HTTP/1.1 408 ") for data, _ in answers)
    assert elapsed < HTTP_LIMITS.header_timeout_s + 3.0
    _check_serving(servers)


# Below and above WHOLE_BODY_MIN: uvicorn's own body path and the whole-body one.
@pytest.mark.parametrize("length", [1000, 200_000])
def test_http_ends_request_when_body_stalls(servers, length):
    sock = _connect(servers)
    start = time.monotonic()
    try:
        sock.sendall(
            b"POST /v2/models/add/infer HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % length
            + b'{"inputs": ['
        )
        answer = _read_all(sock)
    finally:
        sock.close()
    elapsed = time.monotonic() - start
    # Closed within the body deadline, without a 200 (there is nothing to answer).
    assert not answer.startswith(b"HTTP/1.1 200")
    assert elapsed < HTTP_LIMITS.body_timeout_s + 2.5
    _check_serving(servers)


def test_http_keeps_slow_but_complete_requests_and_large_bodies(servers):
    # Deadlines are for arriving requests: keep-alive reuse across pauses, and a body far
    # above the header cap sent in pieces within the body deadline, both work.
    for _ in range(3):
        _check_serving(servers)
        time.sleep(HTTP_LIMITS.header_timeout_s / 2)
    doc = (
        b'{"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 4], "data": [1,2,3,4]},'
        b'{"name": "INPUT1", "datatype": "FP32", "shape": [1, 4], "data": [1,1,1,1]}]'
        + b" " * (200 << 10)  # JSON whitespace: a 200 KiB body
        + b"}"
    )
    sock = _connect(servers)
    try:
        sock.sendall(
            b"POST /v2/models/add/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(doc)
        )
        for i in range(0, len(doc), 50 << 10):
            sock.sendall(doc[i : i + (50 << 10)])
            time.sleep(HTTP_LIMITS.body_timeout_s / 8)
        answer = _read_all(sock)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert b'"data":[2.0,3.0,4.0,5.0]' in answer.replace(b" ", b"")
