"""Rollout webhooks and Prometheus gates against a real local HTTP server (no Ray)."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from test_canary_controller import MODEL, _plan, _tick, _traffic

from rayfront.canary.webhooks import PrometheusGate, Webhook, call_webhook, check_gate
from rayfront.errors import FailedPreconditionError


@dataclass
class HookServer:
    """Answers each path with the status (or delay) the test set; records every body."""

    port: int = 0
    status: dict[str, int] = field(default_factory=dict)
    delay_s: dict[str, float] = field(default_factory=dict)
    prom: dict[str, object] = field(default_factory=dict)
    calls: list[tuple[str, dict]] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def hook(self, name: str, kind: str, **kw: object) -> Webhook:
        return Webhook(name=name, type=kind, url=self.url(f"/{name}"), **kw)  # type: ignore[arg-type]

    def paths(self) -> list[str]:
        return [p for p, _ in self.calls]


@pytest.fixture
def hooks() -> Iterator[HookServer]:
    state = HookServer()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, code: int, body: bytes = b"") -> None:
            self.send_response(code)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            state.calls.append((self.path, body))
            time.sleep(state.delay_s.get(self.path, 0.0))
            self._answer(state.status.get(self.path, 200))

        def do_GET(self) -> None:
            state.calls.append((self.path, {}))
            self._answer(200, json.dumps(state.prom).encode())

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()


def test_call_webhook_retries_then_reports_the_failure_when_server_errors(hooks):
    hooks.status["/gate"] = 503
    result = call_webhook(hooks.hook("gate", "confirm-rollout", retries=1), {"model": "m"})
    assert not result.ok and result.detail == "HTTP 503 (2 attempts)"
    assert hooks.paths() == ["/gate", "/gate"]
    body = hooks.calls[0][1]
    assert body["type"] == "confirm-rollout" and body["model"] == "m"


def test_call_webhook_fails_on_timeout_when_hook_is_slow(hooks):
    hooks.delay_s["/slow"] = 1.0
    result = call_webhook(hooks.hook("slow", "confirm-rollout", timeout_s=0.2, retries=0), {})
    assert not result.ok and result.detail.startswith("timed out after 0.2s")


def test_webhook_refuses_urls_that_are_not_http_when_configured():
    with pytest.raises(ValueError, match="webhook url 'file:///etc/passwd' must be an http"):
        Webhook(name="x", type="pre-rollout", url="file:///etc/passwd")


def test_rollout_pauses_instead_of_advancing_when_confirm_hook_fails(make_manager, clock, hooks):
    hooks.status["/confirm"] = 500
    manager = make_manager()
    manager.start(MODEL, _plan(webhooks=[hooks.hook("confirm", "confirm-rollout", retries=0)]))
    _traffic(manager, 1_500, random.Random(1))
    (decision,) = _tick(manager, clock, 31)
    status = manager.status(MODEL)["rollout"]
    assert status["status"] == "paused" and status["step_index"] == 0
    assert decision[1].reason.startswith("confirm-rollout webhook 'confirm' failed: HTTP 500")
    assert manager.policy(MODEL).weights == {"1": 95, "2": 5}  # traffic did not move forward
    sent = hooks.calls[0][1]
    assert sent["canary_version"] == "2" and sent["canary_weight"] == 5

    hooks.status["/confirm"] = 200  # the external check now agrees
    manager.resume(MODEL)
    _traffic(manager, 1_500, random.Random(2))
    _tick(manager, clock, 31)
    assert manager.policy(MODEL).weights == {"1": 75, "2": 25}


def test_rollout_never_promotes_when_confirm_promotion_times_out(make_manager, clock, hooks):
    hooks.delay_s["/promote"] = 1.0
    manager = make_manager()
    plan = _plan(
        steps=[50, 100],
        webhooks=[hooks.hook("promote", "confirm-promotion", timeout_s=0.2, retries=0)],
    )
    manager.start(MODEL, plan)
    rng = random.Random(3)
    _traffic(manager, 1_500, rng)
    _tick(manager, clock, 31)  # 50 -> 100: a step, not a promotion, no confirm-promotion
    assert manager.policy(MODEL).weights == {"1": 0, "2": 100}
    _traffic(manager, 1_500, rng)
    _tick(manager, clock, 31)
    status = manager.status(MODEL)["rollout"]
    assert status["status"] == "paused"
    assert "confirm-promotion webhook 'promote' failed: timed out" in status["reason"]


def test_rollout_does_not_start_when_pre_rollout_hook_refuses(make_manager, hooks, repo):
    hooks.status["/pre"] = 409
    manager = make_manager()
    before = manager.policy(MODEL).weights
    with pytest.raises(FailedPreconditionError, match="pre-rollout webhook 'pre' failed: HTTP 409"):
        manager.start(MODEL, _plan(webhooks=[hooks.hook("pre", "pre-rollout", retries=0)]))
    assert manager.policy(MODEL).weights == before
    assert not (repo / MODEL / "rollout.json").exists()


def test_rollback_hook_rolls_back_and_post_rollout_hears_of_it_when_it_answers_ok(
    make_manager, clock, hooks
):
    hooks.status["/kill"] = 404  # "no" until someone flips the switch
    manager = make_manager()
    manager.start(
        MODEL,
        _plan(
            webhooks=[
                hooks.hook("kill", "rollback", retries=0),
                hooks.hook("notify", "post-rollout", retries=0),
            ]
        ),
    )
    _tick(manager, clock, 1)
    assert manager.status(MODEL)["rollout"]["status"] == "running"
    hooks.status["/kill"] = 200
    assert _tick(manager, clock, 1) == []  # asked at most every ROLLBACK_POLL_S (5 s)
    assert hooks.paths().count("/kill") == 1
    (decision,) = _tick(manager, clock, 5)
    assert decision[1].action == "rollback"
    assert decision[1].reason == "rollback webhook 'kill' asked for a rollback"
    assert manager.policy(MODEL).weights == {"1": 100, "2": 0}
    deadline = time.monotonic() + 5
    while "/notify" not in hooks.paths() and time.monotonic() < deadline:
        time.sleep(0.02)
    notified = dict(hooks.calls)["/notify"]
    assert notified["phase"] == "rolled_back" and "rollback webhook" in notified["reason"]


def _prom(value: float) -> dict:
    return {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, str(value)]}]},
    }


def test_prometheus_gate_passes_rolls_back_and_pauses_by_query_result(hooks):
    gate = PrometheusGate(name="err", url=hooks.url(""), query="sum(rate(x[1m]))", max_value=0.5)
    hooks.prom = _prom(0.2)
    assert check_gate(gate).action == "pass"
    hooks.prom = _prom(0.9)
    result = check_gate(gate)
    assert result.action == "rollback" and result.detail.endswith("= 0.9 > max 0.5")
    hooks.prom = {"status": "success", "data": {"resultType": "vector", "result": []}}
    assert check_gate(gate).action == "pause"
    assert "query=sum%28rate%28x%5B1m%5D%29%29" in hooks.calls[0][0]
    unreachable = gate.model_copy(update={"url": "http://127.0.0.1:9", "timeout_s": 0.5})
    assert check_gate(unreachable).action == "pause"


def test_rollout_rolls_back_on_prometheus_gate_when_its_own_checks_pass(make_manager, clock, hooks):
    hooks.prom = _prom(42.0)
    gate = PrometheusGate(name="lat", url=hooks.url(""), query="up", max_value=10)
    manager = make_manager()
    manager.start(MODEL, _plan(prometheus_gates=[gate]))
    _traffic(manager, 1_500, random.Random(5))
    (decision,) = _tick(manager, clock, 31)
    assert decision[1].action == "rollback"
    assert decision[1].reason == "prometheus gate 'lat': up = 42 > max 10"
