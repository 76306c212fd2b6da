"""The transport lets no one in: mutual handshake, pre-auth caps, timeouts, connection cap."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import struct
import threading
import time
from collections.abc import Awaitable
from typing import Any

import numpy as np
import pytest

from rayfront.transport.arena import Arena
from rayfront.transport.client import TransportClient
from rayfront.transport.discovery import Endpoint
from rayfront.transport.frames import FRAME, KIND_HELLO, KIND_REQUEST, ConnectionLost
from rayfront.transport.server import ServerLimits, TransportServer


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=20))  # type: ignore[arg-type]


@pytest.fixture
def sock_path() -> str:
    path = f"/tmp/rf-sec-{os.getpid()}-{os.urandom(3).hex()}.sock"
    yield path
    if os.path.exists(path):
        os.unlink(path)


async def _echo(tensors: dict[str, np.ndarray], meta: object) -> dict[str, np.ndarray]:
    return dict(tensors)


def _closed_by_peer(sock: socket.socket) -> bool:
    """True when the peer closed (orderly, or with a reset because data was left unread)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_client_sends_nothing_to_a_listener_that_cannot_prove_the_token(sock_path):
    """A local user who created the socket first learns no token, no tensor, no arena."""
    received = bytearray()
    fds: list[int] = []
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen(1)

    def impostor() -> None:
        conn, _ = listener.accept()
        conn.settimeout(3)
        data, got_fds, _, _ = socket.recv_fds(conn, 4096, 4)
        received.extend(data)
        fds.extend(got_fds)
        # Answer with a nonce and a made-up proof.
        body = b'{"n": "' + b"00" * 16 + b'", "m": "' + b"ab" * 32 + b'"}'
        conn.sendall(FRAME.pack(0, KIND_HELLO, len(body), 0) + body)
        try:
            while chunk := conn.recv(65536):
                received.extend(chunk)
        except OSError:
            pass
        conn.close()

    thread = threading.Thread(target=impostor, daemon=True)
    thread.start()
    arena = Arena(4 << 20)
    endpoint = Endpoint(uds=sock_path, replica="real", token="the-real-secret")

    async def scenario() -> None:
        client = TransportClient(endpoint, arena=arena)
        with pytest.raises(ConnectionLost, match="could not prove it holds") as info:
            await client.call({"x": np.full(100_000, 7.0, np.float32)})
        assert info.value.connect_failed

    run(scenario())
    thread.join(5)
    listener.close()
    _, kind, header_len, body_len = FRAME.unpack_from(received)
    assert kind == KIND_HELLO and body_len == 0
    # Only the client's first HELLO (a version and a nonce) ever reached the impostor.
    assert len(received) == FRAME.size + header_len
    assert b"the-real-secret" not in received
    assert fds == []  # the arena descriptor is only sent to a proven server
    arena.close()


def test_server_closes_unauthenticated_peer_without_reading_when_it_announces_a_huge_frame(
    sock_path,
):
    async def scenario() -> tuple[int, int]:
        server = TransportServer(_echo, limits=ServerLimits(handshake_timeout_s=2))
        ep = await server.start(uds_path=sock_path)
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.connect(sock_path)
        # A REQUEST frame announcing 512 MiB before any handshake.
        raw.sendall(FRAME.pack(1, KIND_REQUEST, 16, 512 << 20) + b"x" * 65536)
        raw.settimeout(3)
        closed = await asyncio.to_thread(_closed_by_peer, raw)
        raw.close()
        # The server is fine for the next, proper client.
        client = TransportClient(ep)
        out = await client.call({"x": np.arange(3, dtype=np.float32)})
        await client.close()
        await server.close()
        return int(closed), int(out["x"][2])

    assert run(scenario()) == (1, 2)


def test_server_closes_silent_peer_when_handshake_deadline_passes(sock_path):
    async def scenario() -> float:
        server = TransportServer(_echo, limits=ServerLimits(handshake_timeout_s=0.3))
        await server.start(uds_path=sock_path)
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.connect(sock_path)
        raw.settimeout(5)
        started = time.monotonic()
        assert await asyncio.to_thread(_closed_by_peer, raw)
        elapsed = time.monotonic() - started
        raw.close()
        assert server.connections == 0
        await server.close()
        return elapsed

    assert run(scenario()) < 3.0


def test_server_caps_connections_when_too_many_peers_connect(sock_path):
    async def scenario() -> int:
        server = TransportServer(
            _echo, limits=ServerLimits(max_connections=2, handshake_timeout_s=5)
        )
        await server.start(uds_path=sock_path)
        socks = []
        for _ in range(5):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(sock_path)
            s.settimeout(5)
            socks.append(s)
        await asyncio.sleep(0.2)
        # The peers beyond the cap are closed at once; the first two wait in the handshake.
        refused = 0
        for s in socks[2:]:
            if await asyncio.to_thread(_closed_by_peer, s):
                refused += 1
        for s in socks:
            s.close()
        await server.close()
        assert server.refused == 3
        return refused

    assert run(scenario()) == 3


def test_server_closes_idle_connection_and_client_reconnects_when_idle_timeout_passes(sock_path):
    async def scenario() -> tuple[bool, float]:
        server = TransportServer(_echo, limits=ServerLimits(idle_timeout_s=0.2))
        client = TransportClient(await server.start(uds_path=sock_path))
        await client.call({"x": np.ones(1, np.float32)})
        assert client.connected
        deadline = time.monotonic() + 5
        while client.connected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        dropped = not client.connected
        out = await client.call({"x": np.full(1, 5.0, np.float32)})
        await client.close()
        await server.close()
        return dropped, float(out["x"][0])

    assert run(scenario()) == (True, 5.0)


def test_socket_file_is_private_when_server_starts(sock_path):
    async def scenario() -> int:
        server = TransportServer(_echo)
        await server.start(uds_path=sock_path)
        mode = stat.S_IMODE(os.stat(sock_path).st_mode)
        await server.close()
        return mode

    assert run(scenario()) == 0o600


def test_malformed_frame_after_handshake_closes_only_that_connection(sock_path):
    async def scenario() -> float:
        server = TransportServer(_echo, name="m v1")
        ep = await server.start(uds_path=sock_path)
        bad = TransportClient(ep)
        await bad.call({"x": np.ones(1, np.float32)})
        # Write a frame of an unknown kind on the authenticated connection.
        bad._writer.write(struct.pack("<QB3xIQ", 9, 77, 0, 0))
        deadline = time.monotonic() + 5
        while bad.connected and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert not bad.connected
        good = TransportClient(ep)
        out = await good.call({"x": np.full(1, 3.0, np.float32)})
        await good.close()
        await bad.close()
        await server.close()
        return float(out["x"][0])

    assert run(scenario()) == 3.0


def test_handshake_refuses_client_with_wrong_token_before_any_request_runs(sock_path):
    calls: list[int] = []

    async def count(tensors: dict[str, np.ndarray], meta: object) -> dict[str, np.ndarray]:
        calls.append(1)
        return dict(tensors)

    async def scenario() -> None:
        server = TransportServer(count, token="right")
        ep = await server.start(uds_path=sock_path)
        wrong = TransportClient(ep.model_copy(update={"token": "wrong"}))
        with pytest.raises(ConnectionLost):
            await wrong.call({"x": np.ones(1, np.float32)})
        await server.close()

    run(scenario())
    assert calls == []
