"""CLI parsing, the admin routes, and the CLI talking to those routes over real HTTP."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from rayfront.canary.api import canary_routes, dispatch
from rayfront.canary.cli import (
    app,
    parse_duration,
    parse_percent,
    parse_rate,
    parse_steps,
    parse_weights,
)
from rayfront.errors import PermissionDeniedError

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


def _check_admin(headers):
    if headers.get("authorization") != f"Bearer {TOKEN}":
        raise PermissionDeniedError("admin token missing or wrong")


@pytest.fixture
def routes(make_manager):
    return canary_routes(make_manager(), _check_admin)


def _call(routes, method, path, body=None, token=TOKEN):
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return asyncio.run(dispatch(routes, method, path, body, headers))


PLAN = {"canary_version": "2", "steps": [5, 25, 50, 100], "interval_s": 30}


def test_routes_start_rollout_and_default_stable_when_plan_valid(routes):
    code, _ = _call(routes, "POST", f"/v2/rayfront/canary/{MODEL}/weights", {"weights": {"1": 100}})
    assert code == 200
    code, body = _call(routes, "POST", f"/v2/rayfront/canary/{MODEL}/start", PLAN)
    assert code == 200, body
    assert body["rollout"]["plan"]["stable_version"] == "1"  # the heaviest version by default
    assert body["policy"]["weights"] == {"1": 95, "2": 5}


def test_routes_answer_409_when_second_rollout_started(routes):
    _call(routes, "POST", f"/v2/rayfront/canary/{MODEL}/start", {**PLAN, "stable_version": "1"})
    code, body = _call(routes, "POST", f"/v2/rayfront/canary/{MODEL}/start", PLAN)
    assert code == 409
    assert "already has a running rollout" in body["error"]


def test_routes_answer_400_when_plan_invalid(routes):
    code, body = _call(
        routes, "POST", f"/v2/rayfront/canary/{MODEL}/start", {**PLAN, "steps": [50, 25]}
    )
    assert code == 400
    assert body["error"].startswith("rollout plan of model 'digits': steps: steps must be strictly")
    code, body = _call(routes, "POST", f"/v2/rayfront/canary/{MODEL}/start", {**PLAN, "bogus": 1})
    assert code == 400 and "bogus: Extra inputs are not permitted" in body["error"]


def test_routes_answer_403_when_admin_token_missing(routes):
    code, body = _call(routes, "POST", f"/v2/rayfront/canary/{MODEL}/pause", token=None)
    assert (code, body) == (403, {"error": "admin token missing or wrong"})
    code, _ = _call(routes, "GET", f"/v2/rayfront/canary/{MODEL}", token=None)
    assert code == 200  # reading needs no token


def test_routes_answer_404_405_and_none_when_path_or_method_wrong(routes):
    code, body = _call(routes, "GET", "/v2/rayfront/canary/ghost")
    assert code == 404 and "model 'ghost' not found" in body["error"]
    code, _ = _call(routes, "DELETE", f"/v2/rayfront/canary/{MODEL}")
    assert code == 405
    assert _call(routes, "GET", "/v2/models/digits") is None
    code, body = _call(
        routes, "POST", f"/v2/rayfront/canary/{MODEL}/weights", {"weights": {"1": 5}}
    )
    assert code == 400 and "weights must sum to 100, got 5" in body["error"]
    code, body = _call(routes, "POST", f"/v2/rayfront/canary/{MODEL}/weights", [1, 2])
    assert code == 400 and "must be an object" in body["error"]


# ---------------------------------------------------------------------- CLI over HTTP


@pytest.fixture
def server(routes):
    class Handler(BaseHTTPRequestHandler):
        def _serve(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            headers = {k.lower(): v for k, v in self.headers.items()}
            answer = asyncio.run(dispatch(routes, self.command, self.path, body, headers))
            code, payload = answer if answer is not None else (404, {"error": "no route"})
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


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
    assert "HTTP 403: admin token missing or wrong" in res.output


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
