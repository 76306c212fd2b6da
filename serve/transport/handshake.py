"""Mutual authentication of a transport connection, before any data moves.

Both ends know the endpoint's token (the replica made it; ingress processes read it from
the endpoint directory, which Ray's own authentication guards). Neither end ever sends
it. Instead each proves knowledge of it over the other's fresh nonce::

    client -> HELLO {"v": 1, "n": client nonce}
    server -> HELLO {"n": server nonce, "m": HMAC(token, "server" | cn | sn)}
    client -> HELLO {"m": HMAC(token, "client" | sn | cn), "arena": bool}  (+ the arena's fd)
    server -> HELLO {"ok": true}

A client therefore stops before sending a single tensor to a socket that something else
created (a local user who made the path first learns nothing and can answer nothing),
and a server reads nothing but these small frames, within a deadline, from a peer that
has not proved itself. Both sides run it on a blocking socket in a worker thread, so the
file descriptor of a shared-memory arena can ride along the client's proof (SCM_RIGHTS),
which it sends only once the server has proved itself.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import socket
from dataclasses import dataclass

import orjson

from rayfront.transport.frames import FRAME, KIND_HELLO

VERSION = 1
#: A handshake frame is a few dozen bytes of JSON; anything larger is refused unread.
MAX_HELLO_BYTES = 512
NONCE_BYTES = 16


class HandshakeError(Exception):
    """The peer failed to prove it holds the endpoint's token, or broke the handshake."""


@dataclass(slots=True)
class ServerSide:
    """What a server learned from a client that proved itself."""

    arena_fd: int | None


def _mac(token: str, role: bytes, first: bytes, second: bytes) -> str:
    return hmac.new(token.encode(), role + first + second, hashlib.sha256).hexdigest()


def _frame(doc: dict[str, object]) -> bytes:
    raw = orjson.dumps(doc)
    return FRAME.pack(0, KIND_HELLO, len(raw), 0) + raw


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise HandshakeError("the peer closed the connection during the handshake")
        buf += chunk
    return bytes(buf)


def _read(sock: socket.socket, *, with_fd: bool = False) -> tuple[dict[str, object], int | None]:
    fd: int | None = None
    if with_fd:
        data, fds, _, _ = socket.recv_fds(sock, FRAME.size, 1)
        for extra in fds[1:]:
            os.close(extra)
        fd = fds[0] if fds else None
        if not data:
            raise HandshakeError("the peer closed the connection during the handshake")
        fixed = data + _recv_exact(sock, FRAME.size - len(data))
    else:
        fixed = _recv_exact(sock, FRAME.size)
    _, kind, header_len, body_len = FRAME.unpack(fixed)
    if kind != KIND_HELLO or body_len or header_len > MAX_HELLO_BYTES:
        if fd is not None:
            os.close(fd)
        raise HandshakeError(
            f"expected a handshake frame of at most {MAX_HELLO_BYTES} bytes, got kind {kind} "
            f"with {header_len}+{body_len} bytes"
        )
    try:
        doc = orjson.loads(_recv_exact(sock, header_len))
        if not isinstance(doc, dict):
            raise ValueError("not an object")
    except (orjson.JSONDecodeError, ValueError) as exc:
        if fd is not None:
            os.close(fd)
        raise HandshakeError(f"malformed handshake frame ({exc})") from None
    return doc, fd


def client_handshake(sock: socket.socket, token: str, *, arena_fd: int | None = None) -> None:
    """Prove the server holds ``token`` and prove we do; raises HandshakeError otherwise.

    ``sock`` is blocking with a timeout. ``arena_fd`` (Unix sockets only) is passed to the
    server with the first frame; it sees the arena only after it has proved itself.
    """
    client_nonce = secrets.token_bytes(NONCE_BYTES)
    sock.sendall(_frame({"v": VERSION, "n": client_nonce.hex()}))
    doc, _ = _read(sock)
    try:
        server_nonce = bytes.fromhex(str(doc["n"]))
        proof = str(doc["m"])
    except (KeyError, ValueError):
        raise HandshakeError("the server's handshake frame lacks its nonce or proof") from None
    expected = _mac(token, b"server", client_nonce, server_nonce)
    if len(server_nonce) != NONCE_BYTES or not hmac.compare_digest(proof, expected):
        raise HandshakeError(
            "the server could not prove it holds this endpoint's token (another process "
            "listens there)"
        )
    proof_frame = _frame(
        {"m": _mac(token, b"client", server_nonce, client_nonce), "arena": arena_fd is not None}
    )
    if arena_fd is not None:
        socket.send_fds(sock, [proof_frame], [arena_fd])
    else:
        sock.sendall(proof_frame)
    doc, _ = _read(sock)
    if doc.get("ok") is not True:
        raise HandshakeError("the server refused this client's proof")


def server_handshake(sock: socket.socket, token: str, *, accept_fd: bool) -> ServerSide:
    """Check a connecting client; raises HandshakeError (and closes any fd) on failure."""
    doc, _ = _read(sock)
    fd: int | None = None
    try:
        if doc.get("v") != VERSION:
            raise HandshakeError(f"unsupported handshake version {doc.get('v')!r}")
        try:
            client_nonce = bytes.fromhex(str(doc["n"]))
        except (KeyError, ValueError):
            raise HandshakeError("the client's handshake frame lacks its nonce") from None
        if len(client_nonce) != NONCE_BYTES:
            raise HandshakeError("the client's nonce has the wrong length")
        server_nonce = secrets.token_bytes(NONCE_BYTES)
        sock.sendall(
            _frame(
                {"n": server_nonce.hex(), "m": _mac(token, b"server", client_nonce, server_nonce)}
            )
        )
        reply, fd = _read(sock, with_fd=accept_fd)
        expected = _mac(token, b"client", server_nonce, client_nonce)
        if not hmac.compare_digest(str(reply.get("m", "")), expected):
            raise HandshakeError("the client could not prove it holds this endpoint's token")
        sock.sendall(_frame({"ok": True}))
    except BaseException:
        if fd is not None:
            os.close(fd)
        raise
    return ServerSide(arena_fd=fd)
