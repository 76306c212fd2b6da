"""Triton's ``GRPCInferenceService`` over a :class:`DataPlane`, on ``grpc.aio``.

Same service, messages and status codes as Triton, so ``tritonclient.grpc`` works
unchanged. Each RPC is a thin adapter: convert the message with
:mod:`rayfront.protocol.grpc_codec`, call the data plane, convert back. Errors become
``context.abort(code, message)`` with the code from :func:`rayfront.errors.status_for`;
an unexpected exception is logged with its traceback and the client gets a generic line.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from rayfront.auth import AdminAuth
from rayfront.errors import (
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    RayfrontError,
    client_message,
    retry_after_s,
    status_for,
)
from rayfront.protocol import grpc_codec
from rayfront.protocol.contract import InferenceService, RepositoryService
from rayfront.protocol.shared_memory import SharedMemoryRegistry
from rayfront.protocol.types import PARAM_ROUTE_KEY, InferRequest
from rayfront.tracing import TRACE_HEADERS, RequestTrace, traced

logger = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Messages above this are converted in a worker thread (typed contents, large outputs),
# so one big tensor does not stall ServerLive and small requests on the event loop.
DEFAULT_OFFLOAD_BYTES = 1 * 1024 * 1024
# Requests of one ModelStreamInfer stream run concurrently up to this many.
STREAM_CONCURRENCY = 64

T = TypeVar("T")
_Method = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[T]]


def _aborts_on_error(method: _Method[T]) -> _Method[T]:
    """Turn rayfront errors into ``context.abort`` with Triton's status mapping."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> T:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except RayfrontError as exc:
            error: BaseException = exc
            logger.debug("%s -> %s: %s", method.__name__, status_for(exc).grpc, exc.message)
        except Exception as exc:
            # Not one of ours: keep the traceback in the log, give the client one line.
            logger.exception("gRPC %s failed with an unexpected error", method.__name__)
            error = exc
        wait = retry_after_s(error)
        pushback = (("grpc-retry-pushback-ms", str(int(wait * 1000))),) if wait is not None else ()
        await context.abort(status_for(error).grpc, client_message(error), pushback)
        raise AssertionError("unreachable: context.abort raises")  # pragma: no cover

    return wrapper


def _metadata(context: grpc.aio.ServicerContext) -> list[tuple[str, str]]:
    return [(k, v) for k, v in context.invocation_metadata() or () if isinstance(v, str)]


class GRPCInferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """Triton's gRPC service backed by ``dataplane`` and ``repository``.

    RepositoryModelLoad and RepositoryModelUnload pass ``auth``'s admin check first.
    Trace and log-settings RPCs stay UNIMPLEMENTED, as in the base class.
    """

    def __init__(
        self,
        dataplane: InferenceService,
        repository: RepositoryService,
        *,
        auth: AdminAuth,
        offload_bytes: int = DEFAULT_OFFLOAD_BYTES,
        shm: SharedMemoryRegistry | None = None,
        shm_remote: bool = False,
    ) -> None:
        self.dataplane = dataplane
        self.repository = repository
        self._auth = auth
        self.offload_bytes = offload_bytes
        self.shm = shm
        self._shm_remote = shm_remote

    # --- health and metadata ----------------------------------------------------------

    @_aborts_on_error
    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerLiveResponse(live=await self.dataplane.live())

    @_aborts_on_error
    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerReadyResponse(ready=await self.dataplane.ready())

    @_aborts_on_error
    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            ready = await self.dataplane.model_ready(request.name, request.version)
        except NotFoundError:
            # Triton answers "not ready" rather than an error for an unknown model.
            ready = False
        return pb.ModelReadyResponse(ready=ready)

    @_aborts_on_error
    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return grpc_codec.server_metadata_to_pb(await self.dataplane.server_metadata())

    @_aborts_on_error
    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        meta = await self.dataplane.model_metadata(request.name, request.version)
        return grpc_codec.model_metadata_to_pb(meta)

    @_aborts_on_error
    async def ModelConfig(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        config = await self.dataplane.model_config(request.name, request.version)
        response = pb.ModelConfigResponse()
        response.config.CopyFrom(config)
        return response

    @_aborts_on_error
    async def ModelStatistics(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        stats = await self.dataplane.statistics(request.name, request.version)
        return grpc_codec.statistics_to_pb(stats)

    # --- repository (admin) ------------------------------------------------------------

    @_aborts_on_error
    async def RepositoryIndex(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        models = await self.repository.repository_index(ready_only=request.ready)
        return grpc_codec.repository_index_to_pb(models)

    @_aborts_on_error
    async def RepositoryModelLoad(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self._auth.check_headers(_metadata(context), "RepositoryModelLoad")
        config = None
        if "config" in request.parameters:
            param = request.parameters["config"]
            if param.WhichOneof("parameter_choice") != "string_param":
                raise InvalidArgumentError(
                    f"failed to load '{request.model_name}': parameter 'config' must be a "
                    "string of JSON"
                )
            config = param.string_param
        await self.repository.load_model(request.model_name, config=config)
        return pb.RepositoryModelLoadResponse()

    @_aborts_on_error
    async def RepositoryModelUnload(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self._auth.check_headers(_metadata(context), "RepositoryModelUnload")
        await self.repository.unload_model(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    # --- inference ---------------------------------------------------------------------

    # --- system shared memory (Triton's extension) ------------------------------------

    def _shm_for(self, context: grpc.aio.ServicerContext) -> SharedMemoryRegistry | None:
        if self.shm is None or not (self._shm_remote or _is_local_peer(context.peer())):
            return None
        return self.shm

    def _shm_admin(self, context: grpc.aio.ServicerContext) -> SharedMemoryRegistry:
        shm = self._shm_for(context)
        if shm is None:
            if self.shm is None:
                raise InvalidArgumentError("system shared memory is not enabled on this server")
            raise PermissionDeniedError(
                "system shared memory is only for clients on the server's own host"
            )
        return shm

    @_aborts_on_error
    async def SystemSharedMemoryStatus(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> Any:
        regions = self._shm_admin(context).status(request.name or None)
        response = pb.SystemSharedMemoryStatusResponse()
        for r in regions:
            response.regions[r["name"]].CopyFrom(
                pb.SystemSharedMemoryStatusResponse.RegionStatus(**r)
            )
        return response

    @_aborts_on_error
    async def SystemSharedMemoryRegister(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> Any:
        self._shm_admin(context).register(
            request.name, request.key, request.offset, request.byte_size
        )
        return pb.SystemSharedMemoryRegisterResponse()

    @_aborts_on_error
    async def SystemSharedMemoryUnregister(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> Any:
        self._shm_admin(context).unregister(request.name or None)
        return pb.SystemSharedMemoryUnregisterResponse()

    # --- inference ---------------------------------------------------------------------

    async def _infer(
        self,
        request: Any,
        route_key: str | None,
        shm: SharedMemoryRegistry | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Any:
        return await traced(
            self.dataplane.tracer,
            metadata,
            "grpc",
            lambda t: self._infer_traced(request, route_key, shm, t),
        )

    async def _infer_traced(
        self,
        request: Any,
        route_key: str | None,
        shm: SharedMemoryRegistry | None,
        trace: RequestTrace | None,
    ) -> Any:
        # Numeric raw contents decode as zero-copy views; typed contents and BYTES elements
        # are decoded one by one, so those go to a thread. (ByteSize() would serialize
        # the message to measure it: as costly as the decode it would decide about.)
        big_in = not request.raw_input_contents or any(
            t.datatype == "BYTES" for t in request.inputs
        )
        if big_in:
            infer_request: InferRequest = await asyncio.to_thread(
                grpc_codec.infer_request_from_pb, request, route_key=route_key, shm=shm
            )
        else:
            infer_request = grpc_codec.infer_request_from_pb(request, route_key=route_key, shm=shm)
        if trace is not None:
            infer_request.trace = trace
            trace.mark("decoded")
        response = await self.dataplane.infer(infer_request)
        if sum(a.nbytes for a in response.outputs.values()) > self.offload_bytes:
            out = await asyncio.to_thread(
                grpc_codec.infer_response_to_pb, response, infer_request, shm
            )
        else:
            out = grpc_codec.infer_response_to_pb(response, infer_request, shm)
        if trace is not None:
            trace.mark("encoded")
        return out

    @_aborts_on_error
    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._infer(
            request, _route_key(context), self._shm_for(context), self._carrier(context)
        )

    def _carrier(self, context: grpc.aio.ServicerContext) -> dict[str, str] | None:
        """The W3C trace context in the call's metadata, read only when tracing is on."""
        if self.dataplane.tracer is None:
            return None
        return {
            key: value
            for key, value in context.invocation_metadata() or ()
            if key in TRACE_HEADERS and isinstance(value, str)
        }

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        """Bidirectional stream; errors travel in-band as ``error_message``, as in Triton.

        Requests run concurrently (up to :data:`STREAM_CONCURRENCY`), so responses may
        come back out of order; clients match them by ``id``.
        """
        route_key = _route_key(context)
        shm = self._shm_for(context)
        carrier = self._carrier(context)
        results: asyncio.Queue[Any] = asyncio.Queue()
        slots = asyncio.Semaphore(STREAM_CONCURRENCY)
        done = object()
        tasks: set[asyncio.Task[None]] = set()

        async def one(msg: Any) -> None:
            try:
                out = pb.ModelStreamInferResponse(
                    infer_response=await self._infer(msg, route_key, shm, carrier)
                )
            except RayfrontError as exc:
                out = _stream_error(msg, exc.message)
            except Exception as exc:
                logger.exception("gRPC ModelStreamInfer request failed with an unexpected error")
                out = _stream_error(msg, client_message(exc))
            # The slot stays taken until the answer is sent: a client that stops reading
            # stops the stream at STREAM_CONCURRENCY answers, it cannot pile them up.
            await results.put(out)

        async def read() -> None:
            try:
                async for msg in request_iterator:
                    await slots.acquire()
                    task = asyncio.create_task(one(msg))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                while tasks:
                    await asyncio.gather(*list(tasks), return_exceptions=True)
            finally:
                await results.put(done)

        reader = asyncio.create_task(read())
        try:
            while True:
                item = await results.get()
                if item is done:
                    break
                try:
                    yield item
                finally:
                    slots.release()
            await reader  # surface a failure of the request stream itself
        finally:
            reader.cancel()
            for task in list(tasks):
                task.cancel()


SERVICE = "inference.GRPCInferenceService"


def _register(server: grpc.aio.Server, servicer: GRPCInferenceServicer) -> None:
    """Bind every method of Triton's service, decoding requests ourselves.

    The generated ``add_GRPCInferenceServiceServicer_to_server`` lets grpc decode the
    protobuf; an undecodable message then fails as UNKNOWN "Unexpected DecodeError". Here
    the handler receives the raw bytes and answers INVALID_ARGUMENT naming the method.
    """
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods:
        request_cls = getattr(pb, method.input_type.name)
        response_cls = getattr(pb, method.output_type.name)
        fn = getattr(servicer, method.name)
        if getattr(type(servicer), method.name) is getattr(
            service_pb2_grpc.GRPCInferenceServiceServicer, method.name
        ):
            fn = _unimplemented(method.name)
        if method.client_streaming:
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(
                _decoding_stream(fn, request_cls, method.name),
                response_serializer=response_cls.SerializeToString,
            )
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _decoding(fn, request_cls, method.name),
                response_serializer=response_cls.SerializeToString,
            )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


def _unimplemented(method: str) -> Any:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, f"{method} is not supported by this server"
        )

    return handler


def _decode_error(method: str, request_cls: Any, exc: Exception) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{method}: the request is not a valid {request_cls.__name__}: {first}"


def _decoding(fn: Any, request_cls: Any, method: str) -> Any:
    async def handler(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        try:
            request = request_cls.FromString(raw)
        except DecodeError as exc:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, _decode_error(method, request_cls, exc)
            )
        return await fn(request, context)

    return handler


def _decoding_stream(fn: Any, request_cls: Any, method: str) -> Any:
    async def handler(raws: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> Any:
        async def requests() -> AsyncIterator[Any]:
            async for raw in raws:
                try:
                    yield request_cls.FromString(raw)
                except DecodeError as exc:
                    await context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT, _decode_error(method, request_cls, exc)
                    )

        async for response in fn(requests(), context):
            yield response

    return handler


def _stream_error(msg: Any, message: str) -> Any:
    return pb.ModelStreamInferResponse(
        error_message=message,
        infer_response=pb.ModelInferResponse(
            model_name=msg.model_name, model_version=msg.model_version, id=msg.id
        ),
    )


def _is_local_peer(peer: str) -> bool:
    """Whether a gRPC peer (``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5000``, ``unix:...``) is on
    this host."""
    return peer.startswith(("unix:", "ipv4:127.", "ipv6:[::1]", "ipv6:%5B::1%5D"))


def _route_key(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == PARAM_ROUTE_KEY and isinstance(value, str):
            return value
    return None


def create_grpc_server(
    dataplane: InferenceService,
    host: str,
    port: int,
    *,
    repository: RepositoryService | None = None,
    auth: AdminAuth | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    reuse_port: bool = False,
    options: Sequence[tuple[str, Any]] = (),
    shm: SharedMemoryRegistry | None = None,
    shm_remote: bool = False,
) -> tuple[grpc.aio.Server, int]:
    """A not-yet-started server with the service bound to ``host:port``; returns the port.

    ``port`` 0 picks a free port. ``reuse_port`` is off by default so a port already in
    use fails loudly instead of two servers silently sharing it.
    """
    if max_message_bytes <= 0:
        raise ValueError(f"max_message_bytes must be > 0, got {max_message_bytes}")
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 1 if reuse_port else 0),
            *options,
        ]
    )
    _register(
        server,
        GRPCInferenceServicer(
            dataplane,
            repository if repository is not None else dataplane,  # type: ignore[arg-type]
            auth=auth if auth is not None else AdminAuth(None),
            shm=shm,
            shm_remote=shm_remote,
        ),
    )
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    bound = server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"gRPC server could not bind {address}")
    return server, bound


async def start_grpc_server(
    dataplane: InferenceService,
    host: str,
    port: int,
    *,
    repository: RepositoryService | None = None,
    auth: AdminAuth | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    reuse_port: bool = False,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Server:
    """Create, bind and start the Triton gRPC server; stop it with ``await server.stop(grace)``.

    Use :func:`create_grpc_server` when you need the bound port of ``port=0``.
    """
    server, bound = create_grpc_server(
        dataplane,
        host,
        port,
        repository=repository,
        auth=auth,
        max_message_bytes=max_message_bytes,
        reuse_port=reuse_port,
        options=options,
    )
    await server.start()
    logger.info("Triton gRPC service listening on %s:%d", host, bound)
    return server
