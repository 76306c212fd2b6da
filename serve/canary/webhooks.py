"""External gates of a rollout, Flagger-style: webhooks and Prometheus queries.

A :class:`Webhook` is an HTTP POST of a JSON payload, with a timeout and retries. What its
answer means depends on its ``type``:

================== ======================================================================
``pre-rollout``    before any traffic moves; not 2xx (or unreachable) -> the start is
                   refused and the stable keeps all traffic
``confirm-rollout`` before each step's traffic increase; failure -> the rollout pauses
``confirm-promotion`` before an automatic promotion; failure -> the rollout pauses
``rollback``       asked every ``ROLLBACK_POLL_S`` while a rollout runs or pauses; a 2xx
                   answer rolls the canary back (an external kill switch); anything else,
                   including a timeout, means "no"
``post-rollout``   after a promotion, rollback or abort; notification only
================== ======================================================================

A hook that fails or times out therefore never promotes and never moves traffic forward.
A :class:`PrometheusGate` runs a PromQL instant query when a step's own analysis passes:
a value beyond its bound rolls back, a query that fails or returns no sample pauses.

Blocking I/O with bounded timeouts: the controller calls these from its worker thread.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

logger = logging.getLogger(__name__)

HookType = Literal[
    "pre-rollout", "confirm-rollout", "confirm-promotion", "rollback", "post-rollout"
]


def _http_url(value: str, what: str) -> str:
    parsed = urllib.parse.urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"{what} {value!r} must be an http:// or https:// URL")
    return value


class Webhook(BaseModel):
    """One rollout webhook."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Named in decisions and logs.")
    type: HookType = Field(description="When it is called and what its answer means.")
    url: str = Field(description="Where the JSON payload is POSTed.")
    timeout_s: float = Field(default=5.0, gt=0, le=60, description="Per attempt.")
    retries: int = Field(default=2, ge=0, le=5, description="Further attempts after a failure.")
    metadata: dict[str, str] = Field(
        default_factory=dict, description="Passed through in the payload."
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _http_url(v, "webhook url")


class PrometheusGate(BaseModel):
    """A PromQL instant query whose value must stay within bounds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Named in decisions and logs.")
    url: str = Field(description="Prometheus base URL, e.g. http://prometheus:9090.")
    query: str = Field(min_length=1, description="PromQL giving one number (first sample).")
    max_value: float | None = Field(default=None, description="Roll back above this.")
    min_value: float | None = Field(default=None, description="Roll back below this.")
    timeout_s: float = Field(default=5.0, gt=0, le=60, description="Query timeout.")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _http_url(v, "prometheus url")

    @model_validator(mode="after")
    def _bounded(self) -> PrometheusGate:
        if self.max_value is None and self.min_value is None:
            raise ValueError(f"prometheus gate {self.name!r} needs max_value or min_value")
        return self


@dataclass(frozen=True)
class HookResult:
    ok: bool
    detail: str


def call_webhook(hook: Webhook, payload: dict[str, Any]) -> HookResult:
    """POST ``payload``; ok on a 2xx answer, after up to ``1 + retries`` attempts."""
    body = json.dumps({**payload, "type": hook.type, "metadata": hook.metadata}).encode()
    detail = ""
    for attempt in range(hook.retries + 1):
        if attempt:
            time.sleep(min(0.5 * attempt, 2.0))
        request = urllib.request.Request(
            hook.url, data=body, method="POST", headers={"content-type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=hook.timeout_s) as resp:
                return HookResult(True, f"HTTP {resp.status}")
        except urllib.error.HTTPError as exc:
            detail = f"HTTP {exc.code}"
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            detail = (
                f"timed out after {hook.timeout_s:g}s"
                if isinstance(reason, TimeoutError) or "timed out" in str(reason)
                else f"unreachable ({reason})"
            )
    attempts = hook.retries + 1
    return HookResult(False, f"{detail} ({attempts} attempt{'s' if attempts > 1 else ''})")


def first_failure(hooks: list[Webhook], kind: HookType, payload: dict[str, Any]) -> str | None:
    """Call every hook of ``kind`` in order; the first failure's description, else None."""
    for hook in hooks:
        if hook.type != kind:
            continue
        result = call_webhook(hook, payload)
        logger.info("%s webhook %r: %s", kind, hook.name, result.detail)
        if not result.ok:
            return f"{kind} webhook {hook.name!r} failed: {result.detail}"
    return None


#: How often, at most, the rollback hooks of one rollout are asked (seconds).
ROLLBACK_POLL_S = 5.0


def rollback_requested(hooks: list[Webhook], payload: dict[str, Any]) -> str | None:
    """The name of the first ``rollback`` hook that answers 2xx, else None.

    One attempt each: anything but a 2xx means "no", so there is nothing to retry, and a
    dead hook costs the evaluation at most its timeout, not its retries and backoff.
    """
    for hook in hooks:
        if (
            hook.type == "rollback"
            and call_webhook(hook.model_copy(update={"retries": 0}), payload).ok
        ):
            return hook.name
    return None


@dataclass(frozen=True)
class GateResult:
    action: Literal["pass", "rollback", "pause"]
    detail: str
    value: float | None = None


def query_prometheus(gate: PrometheusGate) -> float:
    """The first sample of an instant query; raises ValueError/OSError when there is none."""
    url = f"{gate.url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': gate.query})}"
    with urllib.request.urlopen(url, timeout=gate.timeout_s) as resp:
        doc = json.loads(resp.read())
    if doc.get("status") != "success":
        raise ValueError(f"prometheus answered {doc.get('status')}: {doc.get('error', '')}")
    data = doc.get("data", {})
    result = data.get("result")
    if data.get("resultType") == "scalar":
        return float(result[1])
    if not result:
        raise ValueError("the query returned no sample")
    return float(result[0]["value"][1])


def check_gate(gate: PrometheusGate) -> GateResult:
    try:
        value = query_prometheus(gate)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        return GateResult("pause", f"prometheus gate {gate.name!r}: query failed: {exc}")
    if gate.max_value is not None and value > gate.max_value:
        return GateResult(
            "rollback",
            f"prometheus gate {gate.name!r}: {gate.query} = {value:g} > max {gate.max_value:g}",
            value,
        )
    if gate.min_value is not None and value < gate.min_value:
        return GateResult(
            "rollback",
            f"prometheus gate {gate.name!r}: {gate.query} = {value:g} < min {gate.min_value:g}",
            value,
        )
    return GateResult("pass", f"prometheus gate {gate.name!r}: {value:g} within bounds", value)
