"""A raw ASGI app speaking Triton's KServe v2 HTTP protocol over a :class:`DataPlane`.

No web framework: a segment trie routes the request and each endpoint is a few lines
over the data plane, because on the inference hot path a framework's per-request
routing and middleware cost more than the tensor codec. Run it under uvicorn (httptools)
or mount it in a Ray Serve replica; keep-alive, chunking and timeouts are the server's.

Extra routes (the canary admin API, for one) plug in through :class:`Route` without
editing this file::

    async def rollout(ctx: RequestContext) -> Response:
        return Response.json(await canary.state(ctx.params["model"]))

    app = build_http_app(dp, extra_routes=[Route("GET", "/v2/rollouts/{model}", rollout,
                                                 admin=True)])
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson

from rayfront.auth import AdminAuth, presented_token
from rayfront.errors import (
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RayfrontError,
    UnavailableError,
    retry_after_s,
)
from rayfront.protocol import http_codec
from rayfront.protocol.contract import InferenceService, RepositoryService
from rayfront.protocol.shared_memory import SharedMemoryRegistry
from rayfront.protocol.types import InferRequest, InferResponse
from rayfront.tracing import RequestTrace, traced

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
# Bodies (or outputs) above this are decoded/encoded in a worker thread, so a large
# JSON or gzip tensor never stalls health checks and small requests on the event loop.
DEFAULT_OFFLOAD_BYTES = 1 * 1024 * 1024
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(slots=True)
class Response:
    """What a route handler returns."""

    body: bytes = b""
    status: int = 200
    content_type: str = "application/json"
    headers: Sequence[tuple[str, str]] = ()

    @classmethod
    def json(cls, obj: Any, status: int = 200) -> Response:
        """A JSON response (numpy arrays allowed)."""
        return cls(http_codec.dumps(obj), status)

    @classmethod
    def text(
        cls, text: str | bytes, status: int = 200, content_type: str = "text/plain"
    ) -> Response:
        """A plain-text response."""
        body = text.encode() if isinstance(text, str) else text
        return cls(body, status, content_type)


@dataclass(slots=True)
class RequestContext:
    """One request as a route handler sees it; the body is already read and capped."""

    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes
    query_string: bytes = b""
    admin_token: str | None = None
    #: Whether the client connected from this host (loopback or a Unix socket).
    local: bool = False

    def query(self) -> dict[str, str]:
        """Query parameters (last value wins)."""
        return dict(parse_qsl(self.query_string.decode("latin-1")))

    def json(self) -> Any:
        """The body as JSON; an empty body is ``{}``."""
        if not self.body:
            return {}
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise InvalidArgumentError(
                f"{self.method} {self.path}: body is not valid JSON: {exc}"
            ) from None


Handler = Callable[[RequestContext], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint: ``pattern`` segments in braces (``{model}``) are path parameters.

    ``pattern`` may also be a compiled regex (named groups become path parameters);
    regex routes are tried, in order, only for paths no segment pattern matches, so they
    never slow the built-in endpoints. ``admin`` routes pass the app's admin check
    (:mod:`rayfront.auth`) before the handler runs. A handler returns a :class:`Response`, or any
    JSON-serialisable value for a 200 JSON answer, and raises :mod:`rayfront.errors`
    exceptions for failures.
    """

    method: str
    pattern: str | re.Pattern[str]
    handler: Handler
    admin: bool = False


JSONHandler = Callable[[dict[str, str], Any, dict[str, str]], Awaitable[tuple[int, Any]]]


def json_route(
    method: str, pattern: str | re.Pattern[str], handler: JSONHandler, admin: bool = False
) -> Route:
    """A :class:`Route` for a handler written as ``(path_params, json_body, headers) ->
    (status, json_obj)``; an empty body reaches it as ``None``."""

    async def run(ctx: RequestContext) -> Response:
        status, obj = await handler(ctx.params, ctx.json() if ctx.body else None, ctx.headers)
        return Response.json(obj, status)

    return Route(method, pattern, run, admin)


@dataclass(slots=True)
class _Node:
    literal: dict[str, _Node] = field(default_factory=dict)
    param: tuple[str, _Node] | None = None
    routes: dict[str, Route] = field(default_factory=dict)


class Router:
    """Segment trie: literal segments win over parameters, with backtracking."""

    #: Matched paths remembered (model names make the set finite in practice); bounded so a
    #: client cycling through names cannot grow it without limit.
    CACHE_SIZE = 4096

    def __init__(self) -> None:
        self._root = _Node()
        self._regex: list[tuple[re.Pattern[str], dict[str, Route]]] = []
        self._cache: dict[str, tuple[dict[str, Route], dict[str, str]]] = {}

    def add(self, route: Route) -> None:
        """Register ``route``; a second route for the same method and pattern is an error."""
        method = route.method.upper()
        if isinstance(route.pattern, re.Pattern):
            routes = next((r for rx, r in self._regex if rx.pattern == route.pattern.pattern), None)
            if routes is None:
                routes = {}
                self._regex.append((route.pattern, routes))
            if method in routes:
                raise ValueError(f"duplicate route {method} {route.pattern.pattern}")
            routes[method] = route
            self._cache.clear()
            return
        if not route.pattern.startswith("/"):
            raise ValueError(f"route pattern must start with '/', got {route.pattern!r}")
        node = self._root
        for seg in _segments(route.pattern):
            if seg.startswith("{") and seg.endswith("}"):
                name = seg[1:-1]
                if not name.isidentifier():
                    raise ValueError(f"bad parameter {seg!r} in route {route.pattern!r}")
                if node.param is None:
                    node.param = (name, _Node())
                elif node.param[0] != name:
                    raise ValueError(
                        f"route {route.pattern!r}: parameter {{{name}}} conflicts with "
                        f"{{{node.param[0]}}} at the same position"
                    )
                node = node.param[1]
            else:
                node = node.literal.setdefault(seg, _Node())
        if method in node.routes:
            raise ValueError(f"duplicate route {method} {route.pattern}")
        node.routes[method] = route
        self._cache.clear()

    def routes(self) -> list[Route]:
        """Every registered route (for audits: which ones are admin, say)."""
        found: list[Route] = []
        todo = [self._root]
        while todo:
            node = todo.pop()
            found.extend(node.routes.values())
            todo.extend(node.literal.values())
            if node.param is not None:
                todo.append(node.param[1])
        for _, routes in self._regex:
            found.extend(routes.values())
        return found

    def match(self, path: str) -> tuple[dict[str, Route], dict[str, str]] | None:
        """``(routes by method, path params)`` for ``path``, or None when nothing matches."""
        hit = self._cache.get(path)
        if hit is not None:
            return hit[0], dict(hit[1])
        params: dict[str, str] = {}
        node = _walk(self._root, _segments(path), 0, params)
        found = node.routes if node is not None else None
        if found is None:
            for rx, routes in self._regex:
                m = rx.fullmatch(path)
                if m is not None:
                    found = routes
                    params = {k: v for k, v in m.groupdict().items() if v is not None}
                    break
            else:
                return None
        if len(self._cache) < self.CACHE_SIZE:
            self._cache[path] = (found, dict(params))
        return found, params


def _segments(path: str) -> list[str]:
    return [s for s in path.split("/") if s]


def _walk(node: _Node, segs: list[str], i: int, params: dict[str, str]) -> _Node | None:
    if i == len(segs):
        return node if node.routes else None
    child = node.literal.get(segs[i])
    if child is not None:
        found = _walk(child, segs, i + 1, params)
        if found is not None:
            return found
    if node.param is not None:
        name, child = node.param
        found = _walk(child, segs, i + 1, params)
        if found is not None:
            params[name] = segs[i]
            return found
    return None


class _Disconnected(Exception):
    """The client went away before the body was read; nothing to answer."""


class HTTPApp:
    """The ASGI callable. Build it with :func:`build_http_app`."""

    def __init__(
        self,
        dataplane: InferenceService,
        repository: RepositoryService,
        *,
        auth: AdminAuth,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        extra_routes: Sequence[Route | tuple[Any, ...]] = (),
        offload_bytes: int = DEFAULT_OFFLOAD_BYTES,
        shm: SharedMemoryRegistry | None = None,
        shm_remote: bool = False,
        max_json_bytes: int = http_codec.DEFAULT_MAX_JSON_BYTES,
    ) -> None:
        if max_body_bytes <= 0:
            raise ValueError(f"max_body_bytes must be > 0, got {max_body_bytes}")
        self.dataplane = dataplane
        self.repository = repository
        self.max_body_bytes = max_body_bytes
        self.offload_bytes = offload_bytes
        self.max_json_bytes = max_json_bytes
        self._auth = auth
        self.shm = shm
        self._shm_remote = shm_remote
        self.router = Router()
        for route in (*self._builtin_routes(), *extra_routes):
            # A plain (method, pattern, handler[, admin]) tuple is accepted as a Route.
            self.router.add(route if isinstance(route, Route) else Route(*route))

    def _builtin_routes(self) -> list[Route]:
        r: list[Route] = [
            Route("GET", "/v2/health/live", self._live),
            Route("GET", "/v2/health/ready", self._ready),
            Route("GET", "/v2", self._server_metadata),
            Route("GET", "/v2/models/stats", self._stats),
            Route("POST", "/v2/repository/index", self._repository_index),
            Route("POST", "/v2/repository/models/{model}/load", self._load, admin=True),
            Route("POST", "/v2/repository/models/{model}/unload", self._unload, admin=True),
            Route("GET", "/metrics", self._metrics),
            Route("GET", "/v2/systemsharedmemory/status", self._shm_status),
            Route("GET", "/v2/systemsharedmemory/region/{region}/status", self._shm_status),
            Route("POST", "/v2/systemsharedmemory/region/{region}/register", self._shm_register),
            Route(
                "POST", "/v2/systemsharedmemory/region/{region}/unregister", self._shm_unregister
            ),
            Route("POST", "/v2/systemsharedmemory/unregister", self._shm_unregister),
        ]
        for base in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
            r += [
                Route("GET", base, self._model_metadata),
                Route("GET", base + "/ready", self._model_ready),
                Route("GET", base + "/config", self._model_config),
                Route("GET", base + "/stats", self._stats),
                Route("POST", base + "/infer", self._infer),
            ]
        return r

    # --- ASGI -------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await _lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1003})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        root = scope.get("root_path")
        if root and path.startswith(root):
            path = path[len(root) :]
        method: str = scope["method"]
        try:
            found = self.router.match(path)
            if found is None:
                raise NotFoundError(f"no route for {method} {path}")
            routes, params = found
            route = routes.get(method)
            if route is None:
                allowed = ", ".join(sorted(routes))
                body = orjson.dumps(
                    {"error": f"method {method} not allowed for {path}; allowed: {allowed}"}
                )
                await _send(send, 405, body, "application/json", (("allow", allowed),))
                return
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            body = b""
            if method in ("POST", "PUT", "PATCH"):
                body = await self._read_body(receive, headers.get("content-length"), path)
            ctx = RequestContext(
                method=method,
                path=path,
                params=params,
                headers=headers,
                body=body,
                query_string=scope.get("query_string", b""),
                admin_token=presented_token(headers),
                local=_is_local(scope.get("client")),
            )
            if route.admin:
                self._auth.check(ctx.admin_token, f"{method} {path}")
            if route.handler == self._infer:
                result = await _unless_disconnected(route.handler(ctx), receive)
            else:
                result = await route.handler(ctx)
            if not isinstance(result, Response):
                result = Response.json(result)
        except _Disconnected:
            return
        except RayfrontError as exc:
            result = _error(exc, method, path)
        except Exception as exc:
            # Not one of ours: a bug or a library fault. The client gets a generic line,
            # the traceback stays in the server log.
            logger.exception("%s %s failed with an unexpected error", method, path)
            result = _error(exc, method, path)
        await _send(send, result.status, result.body, result.content_type, result.headers)

    async def _read_body(self, receive: Receive, content_length: str | None, path: str) -> bytes:
        cap = self.max_body_bytes
        if content_length is not None:
            try:
                declared = int(content_length)
            except ValueError:
                raise InvalidArgumentError(
                    f"Content-Length must be an integer, got {content_length!r}"
                ) from None
            if declared > cap:
                # Refuse before reading: the server discards the unread rest.
                raise PayloadTooLargeError(
                    f"request body of {declared} bytes to {path} exceeds the {cap}-byte limit"
                )
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            if len(body) > cap:
                raise PayloadTooLargeError(f"request body to {path} exceeds the {cap}-byte limit")
            return body
        parts = [body]
        total = len(body)
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > cap:
                raise PayloadTooLargeError(f"request body to {path} exceeds the {cap}-byte limit")
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)

    async def _offload(self, big: bool, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if big:
            return await asyncio.to_thread(fn, *args, **kwargs)
        return fn(*args, **kwargs)

    # --- endpoints --------------------------------------------------------------------

    async def _live(self, ctx: RequestContext) -> Response:
        if await self.dataplane.live():
            return Response(b"", 200)
        raise UnavailableError("server is not live")

    async def _ready(self, ctx: RequestContext) -> Response:
        if await self.dataplane.ready():
            return Response(b"", 200)
        raise UnavailableError("server is not ready")

    async def _server_metadata(self, ctx: RequestContext) -> Response:
        return Response.json(await self.dataplane.server_metadata())

    async def _model_metadata(self, ctx: RequestContext) -> Response:
        p = ctx.params
        return Response.json(await self.dataplane.model_metadata(p["model"], p.get("version", "")))

    async def _model_ready(self, ctx: RequestContext) -> Response:
        p = ctx.params
        model, version = p["model"], p.get("version", "")
        if await self.dataplane.model_ready(model, version):
            return Response(b"", 200)
        which = f"model '{model}'" + (f" version '{version}'" if version else "")
        raise UnavailableError(f"{which} is not ready")

    async def _model_config(self, ctx: RequestContext) -> Response:
        p = ctx.params
        config = await self.dataplane.model_config(p["model"], p.get("version", ""))
        return Response.json(http_codec.model_config_to_json(config))

    async def _stats(self, ctx: RequestContext) -> Response:
        p = ctx.params
        return Response.json(
            await self.dataplane.statistics(p.get("model", ""), p.get("version", ""))
        )

    async def _repository_index(self, ctx: RequestContext) -> Response:
        doc = ctx.json()
        ready = doc.get("ready", False) if isinstance(doc, dict) else False
        if not isinstance(ready, bool):
            raise InvalidArgumentError(
                f"repository index: 'ready' must be a boolean, got {ready!r}"
            )
        return Response.json(await self.repository.repository_index(ready_only=ready))

    async def _load(self, ctx: RequestContext) -> Response:
        model = ctx.params["model"]
        doc = ctx.json()  # a malformed body is a client error
        params = doc.get("parameters") if isinstance(doc, dict) else None
        params = params if isinstance(params, dict) else {}
        config = params.get("config")
        if config is not None and not isinstance(config, str):
            raise InvalidArgumentError(
                f"failed to load '{model}': parameter 'config' must be a string of JSON"
            )
        await self.repository.load_model(model, config=config)
        return Response(b"", 200)

    async def _unload(self, ctx: RequestContext) -> Response:
        ctx.json()
        await self.repository.unload_model(ctx.params["model"])
        return Response(b"", 200)

    async def _metrics(self, ctx: RequestContext) -> Response:
        return Response(await self.dataplane.metrics_text(), 200, METRICS_CONTENT_TYPE)

    def _shm_for(self, ctx: RequestContext) -> SharedMemoryRegistry | None:
        """The registry, when this client may use it (same host, unless opened wider)."""
        if self.shm is None or not (ctx.local or self._shm_remote):
            return None
        return self.shm

    def _shm_admin(self, ctx: RequestContext) -> SharedMemoryRegistry:
        shm = self._shm_for(ctx)
        if shm is None:
            if self.shm is None:
                raise InvalidArgumentError("system shared memory is not enabled on this server")
            raise PermissionDeniedError(
                "system shared memory is only for clients on the server's own host"
            )
        return shm

    async def _shm_status(self, ctx: RequestContext) -> Response:
        return Response.json(self._shm_admin(ctx).status(ctx.params.get("region")))

    async def _shm_register(self, ctx: RequestContext) -> Response:
        shm = self._shm_admin(ctx)
        doc = ctx.json()
        if not isinstance(doc, dict):
            raise InvalidArgumentError("shared memory register: the body must be a JSON object")
        shm.register(
            ctx.params["region"], doc.get("key"), doc.get("offset", 0), doc.get("byte_size")
        )
        return Response(b"", 200)

    async def _shm_unregister(self, ctx: RequestContext) -> Response:
        self._shm_admin(ctx).unregister(ctx.params.get("region"))
        return Response(b"", 200)

    async def _infer(self, ctx: RequestContext) -> Response:
        return await traced(
            self.dataplane.tracer, ctx.headers, "http", lambda t: self._infer_traced(ctx, t)
        )

    async def _infer_traced(self, ctx: RequestContext, trace: RequestTrace | None) -> Response:
        p = ctx.params
        model = p["model"]
        shm = self._shm_for(ctx)
        headers = ctx.headers
        body = ctx.body
        big = len(body) > self.offload_bytes
        encoding = headers.get("content-encoding")
        if encoding:
            # Always in a thread: a small body can inflate to the full cap.
            body = await asyncio.to_thread(
                http_codec.decompress, body, encoding, max_bytes=self.max_body_bytes
            )
        header_length = http_codec.parse_header_length(headers.get(http_codec.HEADER_LENGTH))
        # Numeric binary tensors decode as zero-copy views, but JSON and BYTES elements are
        # decoded one by one: any big body is decoded off the event loop.
        request = await self._offload(
            len(body) > self.offload_bytes,
            http_codec.decode_infer_request,
            body,
            model_name=model,
            model_version=p.get("version", ""),
            header_length=header_length,
            route_key=headers.get(http_codec.ROUTE_KEY_HEADER),
            shm=shm,
            max_json_bytes=self.max_json_bytes,
        )
        if trace is not None:
            request.trace = trace
            trace.mark("decoded")
        response = await self.dataplane.infer(request)
        out_bytes = sum(a.nbytes for a in response.outputs.values())
        big = out_bytes > self.offload_bytes
        accept = headers.get("accept-encoding")
        out, hlen, enc = await self._offload(big, _encode, response, request, accept, shm)
        if trace is not None:
            trace.mark("encoded")
        extra: list[tuple[str, str]] = []
        if hlen is not None:
            extra.append(("inference-header-content-length", str(hlen)))
        if enc is not None:
            extra.append(("content-encoding", enc))
        content_type = "application/json" if hlen is None else "application/octet-stream"
        return Response(out, 200, content_type, extra)


def _is_local(client: Any) -> bool:
    """Whether an ASGI ``client`` is on this host (a Unix socket has no address)."""
    if not client:
        return True
    host = client[0]
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")


def _encode(
    response: InferResponse,
    request: InferRequest,
    accept: str | None,
    shm: SharedMemoryRegistry | None = None,
) -> tuple[bytes, int | None, str | None]:
    body, hlen = http_codec.encode_infer_response(response, request, shm)
    body, enc = http_codec.compress(body, accept)
    return body, hlen, enc


async def _unless_disconnected(work: Awaitable[Response], receive: Receive) -> Response:
    """``work``'s answer, or :class:`_Disconnected` once the client hangs up.

    A client that gives up (a timeout, Ctrl-C, a closed tab) should not leave its request
    queued for a GPU: cancelling ``work`` reaches the replica as a CANCEL frame, and the
    batcher drops the request if it has not run yet.
    """
    task = asyncio.ensure_future(work)

    async def hung_up() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(hung_up())
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    raise _Disconnected


def _error(exc: BaseException, method: str, path: str) -> Response:
    status, body = http_codec.error_body(exc)
    if isinstance(exc, RayfrontError):
        if status >= 500 and isinstance(exc, InternalError):
            logger.error("%s %s: %s", method, path, exc.message)
        else:
            logger.debug("%s %s -> %d: %s", method, path, status, exc.message)
    wait = retry_after_s(exc)
    headers = [("retry-after", str(max(1, math.ceil(wait))))] if wait is not None else []
    return Response(body, status, headers=headers)


async def _send(
    send: Send, status: int, body: bytes, content_type: str, headers: Sequence[tuple[str, str]]
) -> None:
    raw = [
        (b"content-type", content_type.encode("latin-1")),
        (b"content-length", str(len(body)).encode("latin-1")),
    ]
    raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    # Nothing to set up here (the data plane owns its resources), but answering lifespan
    # keeps uvicorn from logging that the protocol is unsupported.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def build_http_app(
    dataplane: InferenceService,
    repository: RepositoryService | None = None,
    *,
    auth: AdminAuth | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    extra_routes: Sequence[Route | tuple[Any, ...]] = (),
    offload_bytes: int = DEFAULT_OFFLOAD_BYTES,
    shm: SharedMemoryRegistry | None = None,
    shm_remote: bool = False,
    max_json_bytes: int = http_codec.DEFAULT_MAX_JSON_BYTES,
) -> HTTPApp:
    """The KServe v2 / Triton HTTP ASGI app over ``dataplane`` and ``repository``.

    ``repository`` defaults to ``dataplane`` (an object serving both interfaces).
    ``max_body_bytes`` caps request bodies (before and after decompression). ``auth``
    guards the admin routes (repository load/unload and ``extra_routes`` marked
    ``admin``); without it the admin API is off. ``extra_routes`` add endpoints (same
    method and pattern as a built-in is an error). ``shm`` enables Triton's system
    shared-memory extension, for clients on this host unless ``shm_remote``.
    """
    return HTTPApp(
        dataplane,
        repository if repository is not None else dataplane,  # type: ignore[arg-type]
        auth=auth if auth is not None else AdminAuth(None),
        max_body_bytes=max_body_bytes,
        extra_routes=extra_routes,
        offload_bytes=offload_bytes,
        shm=shm,
        shm_remote=shm_remote,
        max_json_bytes=max_json_bytes,
    )
