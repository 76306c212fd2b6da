"""Locust users for rayfront: KServe v2 over HTTP (binary tensors) and over gRPC.

Run one user class against a running ``rayfront serve`` (see benchmarks/README.md)::

    locust -f benchmarks/load/locustfile.py --headless -u 64 -r 64 -t 60s \\
        --host http://127.0.0.1:8000 --csv results/locust-http \\
        --model digits --batch-size 1 KServeHttpUser

    locust -f benchmarks/load/locustfile.py --headless -u 64 -r 64 -t 60s \\
        --grpc-host 127.0.0.1:8001 --csv results/locust-grpc \\
        --model digits --batch-size 1 KServeGrpcUser

Options (also as environment variables): ``--model`` (RAYFRONT_MODEL), ``--model-version``
(RAYFRONT_MODEL_VERSION, pins ``/versions/{v}``), ``--batch-size`` (RAYFRONT_BATCH_SIZE,
rows per request), ``--route-key`` (RAYFRONT_ROUTE_KEY, canary sticky-routing key, sent as
the ``x-rayfront-route-key`` header / request parameter), ``--grpc-host``
(RAYFRONT_GRPC_HOST), ``--inputs-npz`` (RAYFRONT_INPUTS_NPZ, real arrays by input name).

Inputs are shaped from the server's model metadata; the demo models get real data
(digits images, tokenized sentences), see :mod:`rayfront.benchmarks.load.inputs`.

Locust runs every user as a gevent greenlet in one process; on a small host it saturates
before rayfront does, which is why ``rayfront bench run`` uses its own closed-loop client.
Use ``--processes N`` (Locust >= 2.19) to spread users over cores.
"""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import grpc.experimental.gevent as grpc_gevent
import orjson
from locust import User, constant, events, task
from locust.contrib.fasthttp import FastHttpUser
from locust.exception import StopUser

from rayfront.benchmarks.load import wire
from rayfront.benchmarks.load.inputs import (
    make_inputs,
    specs_from_grpc_metadata,
    specs_from_http_metadata,
)

# grpcio blocks the OS thread unless it cooperates with gevent's hub.
grpc_gevent.init_gevent()


@events.init_command_line_parser.add_listener
def _add_options(parser):
    group = parser.add_argument_group("rayfront", "KServe v2 request options")
    group.add_argument("--model", default="mlp", env_var="RAYFRONT_MODEL", help="Model name.")
    group.add_argument(
        "--model-version",
        default="",
        env_var="RAYFRONT_MODEL_VERSION",
        help="Pin a version (URL /versions/{v}; gRPC model_version). Empty: the router picks.",
    )
    group.add_argument(
        "--batch-size",
        type=int,
        default=1,
        env_var="RAYFRONT_BATCH_SIZE",
        help="Rows per request (the batch dim).",
    )
    group.add_argument(
        "--route-key",
        default="",
        env_var="RAYFRONT_ROUTE_KEY",
        help="Canary sticky-routing key (x-rayfront-route-key).",
    )
    group.add_argument(
        "--grpc-host",
        default="127.0.0.1:8001",
        env_var="RAYFRONT_GRPC_HOST",
        help="host:port of the gRPC endpoint (KServeGrpcUser).",
    )
    group.add_argument(
        "--inputs-npz",
        default="",
        env_var="RAYFRONT_INPUTS_NPZ",
        help="An .npz with one array per input name, used instead of generated inputs.",
    )


def _options(env):
    return env.parsed_options


def _http_version(resp) -> str:
    """``model_version`` from a KServe v2 answer (binary: its JSON header part only)."""
    body = resp.content or b""
    length = resp.headers.get(wire.HEADER_LENGTH)
    try:
        head = body[: int(length)] if length else body
        return str(orjson.loads(head).get("model_version") or "?")
    except (ValueError, orjson.JSONDecodeError):
        return "?"


class KServeHttpUser(FastHttpUser):
    """POST /v2/models/{model}[/versions/{v}]/infer with Triton's binary tensor extension."""

    wait_time = constant(0)

    def on_start(self):
        opts = _options(self.environment)
        version = opts.model_version
        meta_path = f"/v2/models/{opts.model}" + (f"/versions/{version}" if version else "")
        with self.client.get(meta_path, name="model metadata", catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"metadata HTTP {resp.status_code}: {resp.text[:200]}")
                raise StopUser()
            meta = orjson.loads(resp.content)
        specs = specs_from_http_metadata(meta)
        npz = Path(opts.inputs_npz) if opts.inputs_npz else None
        inputs = make_inputs(opts.model, specs, opts.batch_size, npz)
        outputs = [o["name"] for o in meta.get("outputs", [])] or None
        self.body, head_len = wire.encode_infer_body(inputs, outputs)
        self.headers = {
            "Content-Type": "application/octet-stream",
            wire.HEADER_LENGTH: str(head_len),
        }
        if opts.route_key:
            self.headers[wire.ROUTE_KEY_HEADER] = opts.route_key
        self.path = wire.infer_path(opts.model, version)
        self.name = f"infer {opts.model} b{opts.batch_size}"

    @task
    def infer(self):
        # Named after the version that answered, so a load test during a canary shows each
        # version's rate and latency; the request is named once its answer is read.
        with self.client.post(
            self.path, data=self.body, headers=self.headers, name=self.name, catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {(resp.text or '')[:200]}")
                return
            resp.request_meta["name"] = f"{self.name} v{_http_version(resp)}"


class KServeGrpcUser(User):
    """ModelInfer on Triton's GRPCInferenceService; every call is reported to Locust's stats."""

    wait_time = constant(0)

    def on_start(self):
        from tritonclient.grpc import service_pb2, service_pb2_grpc

        opts = _options(self.environment)
        self.channel = grpc.insecure_channel(
            opts.grpc_host,
            options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
        )
        stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)
        start = time.perf_counter()
        try:
            meta = stub.ModelMetadata(
                service_pb2.ModelMetadataRequest(name=opts.model, version=opts.model_version),
                timeout=30,
            )
        except grpc.RpcError as err:
            self._report("model metadata", start, 0, err)
            raise StopUser() from None
        self._report("model metadata", start, meta.ByteSize(), None)
        specs = specs_from_grpc_metadata(meta)
        npz = Path(opts.inputs_npz) if opts.inputs_npz else None
        inputs = make_inputs(opts.model, specs, opts.batch_size, npz)
        self.payload = wire.grpc_infer_request(
            opts.model, inputs, opts.model_version, opts.route_key or None
        )
        # Pre-serialized request, raw bytes back: the client does no protobuf work per call.
        self.infer_call = self.channel.unary_unary(
            wire.GRPC_INFER_METHOD, request_serializer=None, response_deserializer=None
        )
        self.name = f"ModelInfer {opts.model} b{opts.batch_size}"

    def on_stop(self):
        channel = getattr(self, "channel", None)
        if channel is not None:
            channel.close()

    def _report(self, name, start, length, exc):
        self.environment.events.request.fire(
            request_type="grpc",
            name=name,
            response_time=(time.perf_counter() - start) * 1000.0,
            response_length=length,
            exception=exc,
            context={},
        )

    @task
    def infer(self):
        from tritonclient.grpc import service_pb2

        start = time.perf_counter()
        try:
            answer = self.infer_call(self.payload, timeout=30)
        except grpc.RpcError as err:
            self._report(self.name, start, 0, err)
            return
        version = service_pb2.ModelInferResponse.FromString(answer).model_version
        self._report(f"{self.name} v{version or '?'}", start, len(answer), None)
