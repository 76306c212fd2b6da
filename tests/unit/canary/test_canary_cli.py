"""CLI parsing, the admin routes, and the CLI talking to those routes over real HTTP."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from typer.testing import CliRunner

from rayfront.auth import AdminAuth
from rayfront.canary.api import canary_routes
from rayfront.canary.canary_cli import (
    app,
    parse_duration,
    parse_percent,
    parse_rate,
    parse_steps,
    parse_weights,
)
from rayfront.protocol.http_app import build_http_app

MODEL = "digits"
TOKEN = "s3cret"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30.0), ("2m", 120.0), ("1h", 3600.0), ("500ms", 0.5), ("45", 45.0), ("1.5S", 1.5)],
)
def test_parse_duration_converts_to_seconds_when_unit_given(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "30x", "-5s", "s", "0s", "thirty"])
def test_parse_duration_rejects_text_when_malformed(text):
    with pytest.raises(
        ValueError, match=r"--interval: (expected a duration like 30s|must be longer than 0)"
    ):
        parse_duration(text, what="--interval")


def test_parse_rate_accepts_percent_and_fraction_when_in_range():
    assert parse_rate("1%") == pytest.approx(0.01)
    assert parse_rate("0.01") == pytest.approx(0.01)
    assert parse_rate("98%") == pytest.approx(0.98)
    with pytest.raises(ValueError, match=r"must be between 0 and 1 .* \(write 1% or 0.01"):
        parse_rate("5")
    with pytest.raises(ValueError, match=r"expected a fraction like 0\.01 or a percent like 1%"):
        parse_rate("lots")
    with pytest.raises(ValueError, match="must be between 0 and 1"):
        parse_rate("150%")


def test_parse_percent_accepts_plain_and_suffixed_when_in_range():
    assert parse_percent("10") == 10.0
    assert parse_percent("12.5%") == 12.5
    with pytest.raises(ValueError, match="must be between 0 and 100"):
        parse_percent("101")


def test_parse_steps_validates_order_when_given_list():
    assert parse_steps("5,25,50,100") == [5, 25, 50, 100]
    with pytest.raises(ValueError, match="strictly ascending"):
        parse_steps("50,25,100")
    with pytest.raises(ValueError, match="the last step must be 100"):
        parse_steps("5,25")
    with pytest.raises(ValueError, match="integer percents"):
        parse_steps("5,x,100")


def test_parse_weights_requires_sum_100_when_pairs_given():
    assert parse_weights(["1=90", "2=10"]) == {"1": 90, "2": 10}
    with pytest.raises(ValueError, match=r"must sum to 100, got 95 \(1=90 2=5\)"):
        parse_weights(["1=90", "2=5"])
    with pytest.raises(ValueError, match="expected VERSION=PERCENT like 1=90, got '190'"):
        parse_weights(["190"])
    with pytest.raises(ValueError, match="version 1 is given twice"):
        parse_weights(["1=50", "1=50"])


# ---------------------------------------------------------------------- admin routes
# The routes run inside the production HTTP app (the same one the ingress serves), driven
# in-process through ASGI, and under uvicorn on a real socket for the CLI tests.


class NoModels:
    """The app's data plane and repository; the canary routes never reach them."""

    async def repository_index(self, ready_only: bool = False) -> list:
        return []


@pytest.fixture
def app_under_test(make_manager):
    return build_http_app(
        NoModels(),  # type: ignore[arg-type]
        auth=AdminAuth(TOKEN),
        extra_routes=canary_routes(make_manager()),
    )


async def _asgi(asgi, method, path, body, headers):
    raw = json.dumps(body).encode() if body is not None else b""
    messages = [{"type": "http.request", "body": raw, "more_body": False}]
    sent: list[dict] = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        "query_string": b"",
    }
    await asgi(scope, receive, send)
    start, reply = sent
    return start["status"], json.loads(reply["body"]) if reply["body"] else None


def _call(asgi, method, path, body=None, token=TOKEN):
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return asyncio.run(_asgi(asgi, method, path, body, headers))


PLAN = {"canary_version": "2", "steps": [5, 25, 50, 100], "interval_s": 30}


def test_routes_start_rollout_and_default_stable_when_plan_valid(app_under_test):
    code, _ = _call(
        app_under_test, "POST", f"/v2/rayfront/canary/{MODEL}/weights", {"weights": {"1": 100}}
    )
    assert code == 200
    code, body = _call(app_under_test, "POST", f"/v2/rayfront/canary/{MODEL}/start", PLAN)
    assert code == 200, body
    assert body["rollout"]["plan"]["stable_version"] == "1"  # the heaviest version by default
    assert body["policy"]["weights"] == {"1": 95, "2": 5}


def test_routes_answer_409_when_second_rollout_started(app_under_test):
    _call(
        app_under_test,
        "POST",
        f"/v2/rayfront/canary/{MODEL}/start",
        {**PLAN, "stable_version": "1"},
    )
    code, body = _call(app_under_test, "POST", f"/v2/rayfront/canary/{MODEL}/start", PLAN)
    assert code == 409
    assert "already has a running rollout" in body["error"]


def test_routes_answer_400_when_plan_invalid(app_under_test):
    code, body = _call(
        app_under_test, "POST", f"/v2/rayfront/canary/{MODEL}/start", {**PLAN, "steps": [50, 25]}
    )
    assert code == 400
    assert body["error"].startswith("rollout plan of model 'digits': steps: steps must be strictly")
    code, body = _call(
        app_under_test, "POST", f"/v2/rayfront/canary/{MODEL}/start", {**PLAN, "bogus": 1}
    )
    assert code == 400 and "bogus: Extra inputs are not permitted" in body["error"]


def test_routes_answer_403_when_admin_token_missing(app_under_test):
    code, body = _call(app_under_test, "POST", f"/v2/rayfront/canary/{MODEL}/pause", token=None)
    assert code == 403
    assert body["error"] == (
        f"POST /v2/rayfront/canary/{MODEL}/pause is an admin call and needs a valid admin "
        "token: send 'Authorization: Bearer <token>' or 'x-rayfront-admin-token: <token>'"
    )
    code, _ = _call(app_under_test, "GET", f"/v2/rayfront/canary/{MODEL}", token=None)
    assert code == 200  # reading needs no token


def test_routes_answer_404_405_and_none_when_path_or_method_wrong(app_under_test):
    code, body = _call(app_under_test, "GET", "/v2/rayfront/canary/ghost")
    assert code == 404 and "model 'ghost' not found" in body["error"]
    code, _ = _call(app_under_test, "DELETE", f"/v2/rayfront/canary/{MODEL}")
    assert code == 405
    code, body = _call(app_under_test, "GET", f"/v2/rayfront/canary/{MODEL}/bogus/path")
    assert code == 404 and "no route" in body["error"]
    code, body = _call(
        app_under_test, "POST", f"/v2/rayfront/canary/{MODEL}/weights", {"weights": {"1": 5}}
    )
    assert code == 400 and "weights must sum to 100, got 5" in body["error"]
    code, body = _call(app_under_test, "POST", f"/v2/rayfront/canary/{MODEL}/weights", [1, 2])
    assert code == 400 and "must be an object" in body["error"]


# ---------------------------------------------------------------------- CLI over HTTP


@pytest.fixture
def server(app_under_test):
    import socket

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app_under_test, lifespan="off", log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=5)
    sock.close()


def _cli(*args, url, token=TOKEN):
    extra = ["--url", url] + (["--admin-token", token] if token else [])
    return CliRunner().invoke(app, [*args, *extra])


def test_cli_runs_rollout_commands_when_server_answers(server):
    res = _cli(
        "start",
        MODEL,
        "--version",
        "2",
        "--stable",
        "1",
        "--steps",
        "5,25,50,100",
        "--interval",
        "30s",
        "--max-error-rate",
        "1%",
        "--max-p99-ratio",
        "1.2",
        "--min-agreement",
        "0.98",
        "--json",
        url=server,
    )
    assert res.exit_code == 0, res.output
    plan = json.loads(res.output)["rollout"]["plan"]
    assert (plan["interval_s"], plan["max_error_rate"], plan["min_agreement"]) == (30.0, 0.01, 0.98)
    assert plan["shadow_percent"] == 10.0

    res = _cli("status", MODEL, url=server)
    assert res.exit_code == 0, res.output
    assert "rollout of v2 against v1 is running at step 1/4 (canary 5%)" in res.output
    assert "History" in res.output

    res = _cli("pause", MODEL, "--reason", "looking at logs", url=server)
    assert res.exit_code == 0, res.output
    assert "looking at logs" in res.output
    res = _cli("set-weights", MODEL, "1=80", "2=20", "--json", url=server)
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["policy"]["weights"] == {"1": 80, "2": 20}
    res = _cli("abort", MODEL, "--json", url=server)
    assert json.loads(res.output)["rollout"]["status"] == "aborted"


def test_cli_shows_server_error_when_request_refused(server):
    res = _cli("pause", MODEL, url=server)  # no rollout yet
    assert res.exit_code == 1
    assert "HTTP 409: model 'digits' has no rollout; start one first" in res.output
    res = _cli("shadow", MODEL, "--percent", "10", "--target", "2", url=server, token="wrong")
    assert res.exit_code == 1
    assert "HTTP 403: POST /v2/rayfront/canary/digits/shadow is an admin call" in res.output


def test_cli_rejects_bad_arguments_before_calling_server_when_input_invalid():
    res = CliRunner().invoke(
        app, ["set-weights", MODEL, "1=90", "2=5", "--url", "http://127.0.0.1:9"]
    )
    assert res.exit_code == 2
    assert "must sum to 100, got 95" in res.output
    res = CliRunner().invoke(
        app, ["start", MODEL, "--version", "2", "--interval", "soon", "--url", "http://127.0.0.1:9"]
    )
    assert res.exit_code == 2
    assert "expected a duration like 30s" in res.output


def test_cli_explains_connection_failure_when_server_down():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the CLI connects
    res = CliRunner().invoke(app, ["status", MODEL, "--url", f"http://127.0.0.1:{port}"])
    assert res.exit_code == 1
    assert f"cannot reach rayfront at http://127.0.0.1:{port}" in res.output


def test_cli_sends_statistics_knobs_and_webhooks_when_given(server):
    res = _cli(
        "start", MODEL, "--version", "2", "--stable", "1", "--alpha", "0.01",
        "--latency-floor-ms", "12", "--webhook", "post-rollout=http://127.0.0.1:9/done",
        "--json", url=server,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    plan = json.loads(res.output)["rollout"]["plan"]
    assert (plan["alpha"], plan["latency_floor_ms"]) == (0.01, 12.0)
    assert plan["webhooks"][0]["type"] == "post-rollout"
    assert plan["webhooks"][0]["url"] == "http://127.0.0.1:9/done"
    bad = _cli("start", MODEL, "--version", "2", "--webhook", "nowhere", url=server)
    assert bad.exit_code == 2 and "expected TYPE=URL, got 'nowhere'" in bad.output
    _cli("abort", MODEL, url=server)
