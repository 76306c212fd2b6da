"""The plain Ray Serve baseline, configured as a competent Ray Serve user would.

This is what a Ray Serve user builds without rayfront, having read Serve's performance
guide: a deployment whose ``__call__`` decodes the KServe v2 binary body and awaits a
``@serve.batch`` method, which runs ``session.run`` once per batch (in a thread, so the
replica keeps accepting requests); ``max_ongoing_requests`` well above the batch size, so
Serve's router never caps a batch; ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` (uvloop, no
cross-thread hops, direct ingress); access logs off. Left at Serve's defaults
(``max_ongoing_requests=5``, no batching), it collapses to a few requests a second under
concurrency, and a ratio against that says nothing.

It runs in its own Ray instance (``address="local"``) in a subprocess so it can neither
join nor disturb another Ray cluster on the host::

    python -m rayfront.benchmarks.targets.serve_plain --model-path repo/mlp/1/model.onnx --port 9100
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from typing import Any

logger = logging.getLogger(__name__)


def build_app(
    model_path: str,
    model_name: str,
    device: str,
    tensorrt: bool,
    max_batch_size: int = 32,
    batch_wait_s: float = 0.001,
) -> Any:
    """The Serve application (imports Ray; only called inside the subprocess)."""
    import asyncio

    import numpy as np
    import orjson
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import Response

    from rayfront.benchmarks.load import wire
    from rayfront.benchmarks.targets.session import make_session, metadata, session_io
    from rayfront.errors import InvalidArgumentError

    @serve.deployment(
        ray_actor_options={"num_gpus": 1 if device == "cuda" else 0},
        max_ongoing_requests=max(4 * max_batch_size, 256),
        logging_config={"enable_access_log": False},
    )
    class PlainModel:
        """Requests decoded in ``__call__``, batched by ``@serve.batch``, one session.run each."""

        def __init__(self) -> None:
            self.session = make_session(model_path, device=device, tensorrt=tensorrt)  # type: ignore[arg-type]
            self.input_names, self.output_names = session_io(self.session)
            self.infer_paths = {wire.infer_path(model_name), wire.infer_path(model_name, "1")}
            self.metadata = orjson.dumps(metadata(self.session, model_name))
            self.metadata_paths = {
                f"/v2/models/{model_name}",
                f"/v2/models/{model_name}/versions/1",
            }

        async def __call__(self, request: Request) -> Response:
            path = request.url.path
            if request.method == "GET" and path in self.metadata_paths:
                return Response(content=self.metadata, media_type="application/json")
            if request.method == "GET":
                code = 200 if path.startswith(("/v2/health", f"/v2/models/{model_name}")) else 404
                return Response(status_code=code)
            if path not in self.infer_paths:
                return Response(status_code=404, content=f'{{"error": "unknown path {path}"}}')
            body = await request.body()
            raw_len = request.headers.get("inference-header-content-length")
            try:
                decoded = wire.decode_body(body, int(raw_len) if raw_len else None, "request")
                feeds = {n: decoded.tensors[n] for n in self.input_names}
            except (InvalidArgumentError, KeyError, ValueError) as err:
                return Response(status_code=400, content=f'{{"error": "{err}"}}')
            outputs = await self.run_batch(feeds)
            payload, head_len = wire.encode_response_body(model_name, "1", outputs)
            return Response(
                content=payload,
                media_type="application/octet-stream",
                headers={"inference-header-content-length": str(head_len)},
            )

        @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_s)
        async def run_batch(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
            sizes = [next(iter(r.values())).shape[0] for r in requests]
            batch = {n: np.concatenate([r[n] for r in requests]) for n in self.input_names}
            results = await asyncio.to_thread(self.session.run, self.output_names, batch)
            out: list[dict[str, Any]] = []
            start = 0
            for size in sizes:
                out.append(
                    {
                        n: r[start : start + size]
                        for n, r in zip(self.output_names, results, strict=True)
                    }
                )
                start += size
            return out

    return PlainModel.bind()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the subprocess: start Ray + Serve, deploy, wait for SIGTERM, shut down."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", required=True, help="ONNX file to serve.")
    parser.add_argument("--model-name", default="mlp", help="Name in the URL.")
    parser.add_argument("--host", default="127.0.0.1", help="Interface Serve's proxy binds.")
    parser.add_argument("--port", type=int, required=True, help="Port of Serve's HTTP proxy.")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="Where to run.")
    parser.add_argument("--tensorrt", action="store_true", help="Prefer ORT's TensorRT EP.")
    parser.add_argument("--max-batch-size", type=int, default=32, help="@serve.batch size.")
    parser.add_argument(
        "--batch-wait-ms", type=float, default=1.0, help="@serve.batch batch_wait_timeout_s, ms."
    )
    args = parser.parse_args(argv)
    # Serve reads its constants when its modules import: set the knob before.
    os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    import ray
    from ray import serve

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    ray.init(
        address="local",
        num_cpus=os.cpu_count(),
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=256 * 1024 * 1024,
        namespace="rayfront-bench-plain",
    )
    try:
        serve.start(http_options={"host": args.host, "port": args.port})
        app = build_app(
            args.model_path,
            args.model_name,
            args.device,
            args.tensorrt,
            args.max_batch_size,
            args.batch_wait_ms / 1000,
        )
        serve.run(app, name="plain", route_prefix="/", blocking=False)
        logger.info("plain Serve baseline ready on %s:%d", args.host, args.port)
        stop.wait()
    finally:
        logger.info("shutting down plain Serve baseline")
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


if __name__ == "__main__":
    main()
