"""The ASGI app called in-process: router, extra routes, admin token, lifespan, body cap."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson
import pytest
from protocol_fakes import ADMIN_TOKEN, FakeDataPlane

from rayfront.auth import AdminAuth
from rayfront.errors import AlreadyExistsError
from rayfront.protocol.http_app import (
    RequestContext,
    Response,
    Route,
    Router,
    build_http_app,
    json_route,
)


async def _call(
    app,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    chunks: int = 1,
):
    """Drive the ASGI app like a server would; returns (status, headers, body, receive calls)."""
    raw_headers = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    size = max(1, -(-len(body) // chunks))
    pieces = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    messages = [
        {"type": "http.request", "body": p, "more_body": i < len(pieces) - 1}
        for i, p in enumerate(pieces)
    ]
    received = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal received
        received += 1
        if messages:
            return messages.pop(0)
        # As a server does while the client stays connected: nothing more to say.
        await asyncio.Future()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": raw_headers,
        "query_string": b"a=1&b=2",
    }
    await app(scope, receive, send)
    start, body_msg = sent
    out_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], out_headers, body_msg["body"], received


def call(app, *args, **kwargs):
    return asyncio.run(_call(app, *args, **kwargs))


async def _rollout(ctx: RequestContext) -> Response:
    return Response.json({"model": ctx.params["model"], "query": ctx.query(), "body": ctx.json()})


async def _conflict(ctx: RequestContext) -> dict:
    raise AlreadyExistsError(f"model '{ctx.params['model']}' already has a rollout in progress")


EXTRA = [
    Route("POST", "/v2/rollouts/{model}", _rollout, admin=True),
    Route("GET", "/v2/rollouts/{model}/status", lambda ctx: _plain(ctx)),
    Route("PUT", "/v2/rollouts/{model}", _conflict, admin=True),
]


async def _plain(ctx: RequestContext) -> dict:
    return {"status": "ok", "model": ctx.params["model"]}


def test_http_app_serves_extra_route_when_admin_token_valid():
    app = build_http_app(FakeDataPlane(), auth=AdminAuth(ADMIN_TOKEN), extra_routes=EXTRA)
    status, _, body, _ = call(
        app,
        "POST",
        "/v2/rollouts/digits",
        b'{"weight": 10}',
        {"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert status == 200
    assert orjson.loads(body) == {
        "model": "digits",
        "query": {"a": "1", "b": "2"},
        "body": {"weight": 10},
    }
    status, _, body, _ = call(app, "GET", "/v2/rollouts/digits/status")
    assert (status, orjson.loads(body)) == (200, {"status": "ok", "model": "digits"})


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"x-rayfront-admin-token": "nope"}]
)
def test_http_app_returns_403_when_admin_token_missing_or_wrong(headers):
    dp = FakeDataPlane()
    app = build_http_app(dp, auth=AdminAuth(ADMIN_TOKEN), extra_routes=EXTRA)
    status, _, body, _ = call(app, "POST", "/v2/repository/models/add/load", b"", headers)
    assert status == 403
    assert "needs a valid admin token" in orjson.loads(body)["error"]
    assert dp.admin_calls == []  # refused before the data plane
    assert call(app, "POST", "/v2/rollouts/digits", b"{}", headers)[0] == 403


def test_http_app_maps_handler_error_when_extra_route_raises():
    app = build_http_app(FakeDataPlane(), auth=AdminAuth(ADMIN_TOKEN), extra_routes=EXTRA)
    status, _, body, _ = call(
        app, "PUT", "/v2/rollouts/digits", b"{}", {"x-rayfront-admin-token": ADMIN_TOKEN}
    )
    assert (status, orjson.loads(body)) == (
        409,
        {"error": "model 'digits' already has a rollout in progress"},
    )


def test_http_app_rejects_when_extra_route_duplicates_builtin():
    with pytest.raises(ValueError, match="duplicate route GET /v2/health/live"):
        build_http_app(FakeDataPlane(), extra_routes=[Route("GET", "/v2/health/live", _plain)])


def test_router_prefers_literal_and_backtracks_when_segments_overlap():
    router = Router()
    for pattern in ("/v2/models/stats", "/v2/models/{model}/ready", "/v2/models/{model}"):
        router.add(Route("GET", pattern, _plain))
    assert router.match("/v2/models/stats")[1] == {}
    assert router.match("/v2/models/stats/ready")[1] == {"model": "stats"}
    assert router.match("/v2/models/digits/")[1] == {"model": "digits"}
    assert router.match("/v2/models") is None
    with pytest.raises(ValueError, match=r"parameter \{name\} conflicts with \{model\}"):
        router.add(Route("GET", "/v2/models/{name}/x", _plain))


def test_http_app_rejects_before_reading_when_content_length_over_cap():
    app = build_http_app(FakeDataPlane(), max_body_bytes=100)
    status, _, body, received = call(
        app, "POST", "/v2/models/add/infer", b"x" * 200, {"Content-Length": "200"}
    )
    assert status == 400
    assert (
        orjson.loads(body)["error"]
        == "request body of 200 bytes to /v2/models/add/infer exceeds the 100-byte limit"
    )
    assert received == 0


def test_http_app_stops_reading_when_chunked_body_passes_cap():
    app = build_http_app(FakeDataPlane(), max_body_bytes=100)
    status, _, body, received = call(app, "POST", "/v2/models/add/infer", b"x" * 1000, chunks=10)
    assert status == 400
    assert "exceeds the 100-byte limit" in orjson.loads(body)["error"]
    assert received == 2  # stopped at the chunk that crossed the cap


def test_http_app_reassembles_body_when_chunked():
    body = orjson.dumps(
        {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": ["abc"]}]}
    )
    status, headers, out, received = call(
        build_http_app(FakeDataPlane()), "POST", "/v2/models/upper/infer", body, chunks=4
    )
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert orjson.loads(out)["outputs"][0]["data"] == ["ABC"]
    assert received == 5  # four body chunks, then the watch for a hang-up


def test_http_app_strips_root_path_when_mounted_under_prefix():
    app = build_http_app(FakeDataPlane())

    async def run() -> int:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "GET",
            "path": "/serve/v2/health/live",
            "root_path": "/serve",
            "headers": [],
        }
        await app(scope, None, send)
        return sent[0]["status"]

    assert asyncio.run(run()) == 200


def test_http_app_completes_lifespan_when_server_starts_and_stops():
    app = build_http_app(FakeDataPlane())
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    asyncio.run(app({"type": "lifespan"}, receive, send))
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_http_app_serves_regex_and_tuple_routes_when_no_segment_route_matches():
    rx = re.compile(r"/v2/rayfront/canary/(?P<model>[^/]+)/(?P<action>pause|resume)")
    app = build_http_app(
        FakeDataPlane(),
        extra_routes=[
            ("POST", rx, lambda ctx: _echo_params(ctx)),
            ("GET", "/v2/rayfront/canary", lambda ctx: _echo_params(ctx)),
        ],
    )
    status, _, body, _ = call(app, "POST", "/v2/rayfront/canary/digits/pause", b"{}")
    assert (status, orjson.loads(body)) == (200, {"model": "digits", "action": "pause"})
    assert call(app, "GET", "/v2/rayfront/canary/")[0] == 200
    assert call(app, "GET", "/v2/rayfront/canary/digits/pause")[0] == 405
    assert call(app, "POST", "/v2/rayfront/canary/digits/explode")[0] == 404


async def _echo_params(ctx: RequestContext) -> dict:
    return ctx.params


def test_http_app_adapts_json_handler_when_wrapped_with_json_route():
    async def weights(params, body, headers):
        return 202, {"model": params["model"], "body": body, "agent": headers.get("user-agent")}

    rx = re.compile(r"/v2/rayfront/canary/(?P<model>[^/]+)/weights")
    app = build_http_app(FakeDataPlane(), extra_routes=[json_route("POST", rx, weights)])
    status, _, body, _ = call(
        app, "POST", "/v2/rayfront/canary/m1/weights", b'{"w": 5}', {"User-Agent": "t"}
    )
    assert (status, orjson.loads(body)) == (202, {"model": "m1", "body": {"w": 5}, "agent": "t"})
    status, _, body, _ = call(app, "POST", "/v2/rayfront/canary/m1/weights")
    assert orjson.loads(body)["body"] is None


def test_http_app_cancels_inference_when_client_hangs_up():
    class Hanging(FakeDataPlane):
        started = asyncio.Event()
        cancelled = False

        async def infer(self, request):
            Hanging.started.set()
            try:
                await asyncio.Future()
            except asyncio.CancelledError:
                Hanging.cancelled = True
                raise

    async def main() -> list[dict[str, Any]]:
        Hanging.started = asyncio.Event()
        gone = asyncio.Event()
        body = orjson.dumps(
            {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": ["abc"]}]}
        )
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop(0)
            await gone.wait()
            return {"type": "http.disconnect"}

        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/v2/models/upper/infer", "headers": []}
        app_task = asyncio.ensure_future(build_http_app(Hanging())(scope, receive, send))
        await asyncio.wait_for(Hanging.started.wait(), 5)
        gone.set()
        await asyncio.wait_for(app_task, 5)
        return sent

    sent = asyncio.run(main())
    assert Hanging.cancelled
    assert sent == []  # nobody to answer
