"""The bare ASGI baseline: what a simple single-process server does with the same session.

A raw ASGI callable (no framework) under uvicorn with httptools and uvloop, speaking the
same KServe v2 binary protocol as rayfront, one ``session.run`` per request on the event
loop, no batching, no validation beyond decoding. It is the honest "how fast can one
Python process answer" bar that rayfront's extra hops are compared against.

Run as a subprocess by the sweep::

    python -m rayfront.benchmarks.targets.bare_asgi --model-path repo/mlp/1/model.onnx --port 9000
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from rayfront.benchmarks.load import wire
from rayfront.benchmarks.targets.session import make_session, metadata, session_io
from rayfront.errors import InvalidArgumentError

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class BareApp:
    """ASGI app: health, model readiness and infer for one model."""

    def __init__(self, session: Any, model_name: str) -> None:
        self.session = session
        self.model_name = model_name
        self.input_names, self.output_names = session_io(session)
        self._infer_paths = {
            wire.infer_path(model_name),
            wire.infer_path(model_name, "1"),
        }
        self._ready_paths = {
            "/v2/health/ready",
            "/v2/health/live",
            f"/v2/models/{model_name}/ready",
        }
        self._metadata = orjson.dumps(metadata(session, model_name))
        self._metadata_paths = {f"/v2/models/{model_name}", f"/v2/models/{model_name}/versions/1"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if scope["method"] == "POST" and path in self._infer_paths:
            await self._infer(scope, receive, send)
        elif scope["method"] == "GET" and path in self._ready_paths:
            await _respond(send, 200, b"", b"text/plain")
        elif scope["method"] == "GET" and path in self._metadata_paths:
            await _respond(send, 200, self._metadata, b"application/json")
        else:
            await _respond(
                send, 404, orjson.dumps({"error": f"unknown path {path}"}), b"application/json"
            )

    async def _infer(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        header_length = None
        for name, value in scope["headers"]:
            if name == b"inference-header-content-length":
                header_length = int(value)
        try:
            request = wire.decode_body(body, header_length, "request")
            feeds = {n: request.tensors[n] for n in self.input_names}
        except (InvalidArgumentError, KeyError, ValueError) as err:
            await _respond(send, 400, orjson.dumps({"error": str(err)}), b"application/json")
            return
        results = self.session.run(self.output_names, feeds)
        payload, head_len = wire.encode_response_body(
            self.model_name, "1", dict(zip(self.output_names, results, strict=True))
        )
        await _respond(
            send,
            200,
            payload,
            b"application/octet-stream",
            [(b"inference-header-content-length", str(head_len).encode())],
        )


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send(
        {"type": "http.response.start", "status": status, "headers": headers + (extra or [])}
    )
    await send({"type": "http.response.body", "body": body})


def main(argv: list[str] | None = None) -> None:
    """Entry point of the subprocess."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", required=True, help="ONNX file to serve.")
    parser.add_argument("--model-name", default="mlp", help="Name in the URL.")
    parser.add_argument("--host", default="127.0.0.1", help="Interface to bind.")
    parser.add_argument("--port", type=int, required=True, help="Port to bind.")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="Where to run.")
    parser.add_argument("--tensorrt", action="store_true", help="Prefer ORT's TensorRT EP.")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="Processes sharing the port (uvicorn --workers), as one scales a bare server.",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    import uvicorn

    os.environ[_ENV] = orjson.dumps(
        {
            "model_path": args.model_path,
            "model_name": args.model_name,
            "device": args.device,
            "tensorrt": args.tensorrt,
        }
    ).decode()
    logger.info(
        "bare ASGI baseline serving %s on %s:%d (%d worker(s))",
        args.model_name,
        args.host,
        args.port,
        args.workers,
    )
    # An import string and a factory: uvicorn's worker processes build their own app.
    uvicorn.run(
        "rayfront.benchmarks.targets.bare_asgi:app_from_env",
        factory=True,
        workers=args.workers,
        host=args.host,
        port=args.port,
        http="httptools",
        loop="uvloop",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )


_ENV = "RAYFRONT_BARE_ASGI"


def app_from_env() -> BareApp:
    """The app, built in each worker from what :func:`main` put in the environment."""
    conf = orjson.loads(os.environ[_ENV])
    session = make_session(conf["model_path"], device=conf["device"], tensorrt=conf["tensorrt"])
    return BareApp(session, conf["model_name"])


if __name__ == "__main__":
    main()
