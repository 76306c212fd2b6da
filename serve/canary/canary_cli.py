"""``rayfront canary``: drive canary rollouts of a running server through its admin API.

Every command talks HTTP to ``--url`` (env ``RAYFRONT_URL``, default
http://127.0.0.1:8000) with ``--admin-token`` (env ``RAYFRONT_ADMIN_TOKEN``) sent as
``Authorization: Bearer <token>``; the routes are documented in :mod:`rayfront.canary.api`.
Nothing here changes files directly, so a running server never sees its state change
behind its back.

Units on the command line: durations ``30s``, ``2m``, ``1h``, ``500ms`` (a bare number is
seconds); rates ``1%`` or ``0.01``; percents ``10`` or ``10%``; steps ``5,25,50,100``;
weights ``1=90 2=10``.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path
from typing import Any

import typer

from rayfront.errors import RayfrontError

app = typer.Typer(
    help="Canary rollouts: weights, shadow traffic, progressive delivery with analysis.",
    no_args_is_help=True,
)

DEFAULT_URL = "http://127.0.0.1:8000"
API_PREFIX = "/v2/rayfront/canary"

_DURATION = re.compile(r"^\s*(?P<num>\d+(?:\.\d+)?|\.\d+)\s*(?P<unit>ms|s|m|h)?\s*$", re.IGNORECASE)
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


# ---------------------------------------------------------------------- parsing (pure)


def parse_duration(text: str, *, what: str = "duration", allow_zero: bool = False) -> float:
    """``30s`` / ``2m`` / ``1h`` / ``500ms`` / ``45`` -> seconds (> 0, or >= 0 if allowed)."""
    m = _DURATION.match(str(text))
    if m is None:
        raise ValueError(f"{what}: expected a duration like 30s, 2m, 1h or 500ms, got {text!r}")
    seconds = float(m.group("num")) * _UNIT_S[(m.group("unit") or "").lower() or None]
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ValueError(f"{what}: must be longer than 0, got {text!r}")
    return seconds


def parse_rate(text: str, *, what: str = "rate") -> float:
    """``1%`` -> 0.01, ``0.01`` -> 0.01; must land in [0, 1]."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ValueError(
            f"{what}: expected a fraction like 0.01 or a percent like 1%, got {text!r}"
        ) from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        hint = " (write 1% or 0.01 for one percent)" if not raw.endswith("%") and value > 1 else ""
        raise ValueError(f"{what}: must be between 0 and 1 (0%..100%), got {text!r}{hint}")
    return value


def parse_percent(text: str, *, what: str = "percent") -> float:
    """``10`` or ``10%`` -> 10.0; must land in [0, 100]."""
    raw = str(text).strip().removesuffix("%")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{what}: expected a percent like 10 or 10%, got {text!r}") from None
    if not math.isfinite(value) or not 0.0 <= value <= 100.0:
        raise ValueError(f"{what}: must be between 0 and 100, got {text!r}")
    return value


def parse_steps(text: str) -> list[int]:
    """``5,25,50,100`` -> [5, 25, 50, 100]: integers 1..100, ascending, ending at 100."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    try:
        steps = [int(p.removesuffix("%")) for p in parts]
    except ValueError:
        raise ValueError(
            f"steps: expected comma-separated integer percents like 5,25,50,100, got {text!r}"
        ) from None
    if not steps:
        raise ValueError(
            f"steps: expected comma-separated integer percents like 5,25,50,100, got {text!r}"
        )
    if any(not 1 <= s <= 100 for s in steps):
        raise ValueError(f"steps: every step must be in 1..100, got {text!r}")
    if any(b <= a for a, b in itertools.pairwise(steps)):
        raise ValueError(f"steps: must be strictly ascending, got {text!r}")
    if steps[-1] != 100:
        raise ValueError(f"steps: the last step must be 100 (full promotion), got {text!r}")
    return steps


def parse_weights(items: list[str]) -> dict[str, int]:
    """``["1=90", "2=10"]`` -> {"1": 90, "2": 10}; must sum to 100."""
    if not items:
        raise ValueError("weights: give VERSION=PERCENT pairs, e.g. 1=90 2=10")
    weights: dict[str, int] = {}
    for item in items:
        version, sep, weight = str(item).partition("=")
        version = version.strip().removeprefix("v")
        if not sep or not version.isdigit():
            raise ValueError(f"weights: expected VERSION=PERCENT like 1=90, got {item!r}")
        try:
            value = int(weight.strip().removesuffix("%"))
        except ValueError:
            raise ValueError(
                f"weights: percent of version {version} must be an integer, got {item!r}"
            ) from None
        if version in weights:
            raise ValueError(f"weights: version {version} is given twice")
        if not 0 <= value <= 100:
            raise ValueError(
                f"weights: percent of version {version} must be in 0..100, got {value}"
            )
        weights[version] = value
    total = sum(weights.values())
    if total != 100:
        raise ValueError(f"weights: must sum to 100, got {total} ({' '.join(items)})")
    return weights


def _parse_grace(text: str, *, what: str) -> float:
    return parse_duration(text, what=what, allow_zero=True)


# ---------------------------------------------------------------------- HTTP client


class AdminError(Exception):
    """The server refused a request or could not be reached; the message says which."""


def call_admin(
    url: str,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    token: str | None = None,
    timeout_s: float = 10.0,
) -> dict[str, Any]:
    """One JSON request to the admin API; raises AdminError with the server's message."""
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode("utf-8")
    req = urllib.request.Request(url.rstrip("/") + path, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            message = json.loads(raw).get("error") or raw.decode("utf-8", "replace")
        except (ValueError, AttributeError):
            message = raw.decode("utf-8", "replace").strip() or exc.reason
        raise AdminError(f"{method} {path} failed with HTTP {exc.code}: {message}") from None
    except urllib.error.URLError as exc:
        raise AdminError(
            f"cannot reach rayfront at {url}: {exc.reason}; is `rayfront serve` running "
            "(or set --url / RAYFRONT_URL)?"
        ) from None
    except TimeoutError:
        raise AdminError(f"{method} {path} timed out after {timeout_s:g}s at {url}") from None


def model_path(model: str, suffix: str = "") -> str:
    from urllib.parse import quote

    return f"{API_PREFIX}/{quote(model, safe='')}{suffix}"


# ---------------------------------------------------------------------- rendering


def _fmt(value: Any, kind: str = "") -> str:
    if value is None:
        return "-"
    if kind == "rate" and isinstance(value, int | float):
        return f"{value * 100:.2f}%"
    if kind == "ms" and isinstance(value, int | float):
        return f"{value * 1000:.2f} ms"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render_status(status: dict[str, Any], console: Any) -> None:
    """Print a status document (from ``GET /v2/rayfront/canary/{model}``) as rich tables."""
    from rich.table import Table

    model = status.get("model", "?")
    policy = status.get("policy") or {}
    rollout = status.get("rollout")
    live = set(status.get("live_versions") or [])

    if rollout is None:
        console.print(f"[bold]{model}[/]: no rollout")
    else:
        plan = rollout["plan"]
        step = rollout.get("step") or {}
        color = {"running": "green", "paused": "yellow", "promoted": "cyan"}.get(
            rollout["status"], "red"
        )
        line = (
            f"[bold]{model}[/]: rollout of v{plan['canary_version']} against "
            f"v{plan['stable_version']} is [{color}]{rollout['status']}[/] at step "
            f"{step.get('number', rollout['step_index'] + 1)}/{step.get('of', len(plan['steps']))} "
            f"(canary {step.get('canary_weight', '?')}%)"
        )
        if rollout.get("next_analysis_in_s") is not None:
            line += f", next analysis in {rollout['next_analysis_in_s']:.0f}s"
        console.print(line)
        if rollout.get("reason"):
            console.print(f"  reason: {rollout['reason']}")
        console.print(f"  rollbacks: {rollout.get('rollback_count', 0)}")

    for r in (status.get("rehearsals") or [])[-3:]:
        color = "green" if r["verdict"] == "pass" else "red"
        agreement = "n/a" if r.get("agreement") is None else f"{r['agreement']:.2%}"
        console.print(
            f"  rehearsal of v{r['canary_version']} on {r['requests']} recorded requests "
            f"({r['at'][:19]}): [{color}]{r['verdict']}[/], agreement {agreement}, "
            f"errors {r['errors']}, p50 {_ms(r.get('canary_p50_s'))} vs stable "
            f"{_ms(r.get('stable_p50_s'))}"
            + (f" - {'; '.join(r['reasons'])}" if r.get("reasons") else "")
        )

    weights = Table(title="Traffic", show_edge=False)
    for col in ("version", "weight", "role", "live"):
        weights.add_column(col)
    roles: dict[str, list[str]] = {}
    if rollout is not None:
        roles.setdefault(rollout["plan"]["stable_version"], []).append("stable")
        roles.setdefault(rollout["plan"]["canary_version"], []).append("canary")
    if policy.get("shadow_target"):
        roles.setdefault(policy["shadow_target"], []).append(
            f"shadow {policy.get('shadow_percent', 0):g}%"
        )
    for version, weight in (policy.get("weights") or {}).items():
        weights.add_row(
            version,
            f"{weight}%",
            ", ".join(roles.get(version, [])),
            "yes" if version in live else "[red]no[/]",
        )
    console.print(weights)

    cmp = status.get("latest_comparison")
    if cmp:
        table = Table(title="Latest analysis", show_edge=False)
        for col in ("metric", "stable", "canary", "threshold", "result"):
            table.add_column(col)
        thresholds = {c["metric"]: c for c in cmp.get("checks", [])}
        plan = rollout["plan"] if rollout else {}

        def verdict(metric: str) -> str:
            check = thresholds.get(metric)
            if check is None:
                return "-"
            return "[green]pass[/]" if check["passed"] else "[red]FAIL[/]"

        table.add_row(
            "requests",
            _fmt(cmp.get("stable_requests")),
            _fmt(cmp.get("canary_requests")),
            f">= {plan.get('min_requests', '?')}",
            "",
        )
        table.add_row(
            "error rate",
            _fmt(cmp.get("stable_error_rate"), "rate"),
            _fmt(cmp.get("canary_error_rate"), "rate"),
            f"<= {_fmt(plan.get('max_error_rate'), 'rate')}",
            verdict("error_rate"),
        )
        table.add_row(
            "p99 latency",
            _fmt(cmp.get("stable_p99_s"), "ms"),
            _fmt(cmp.get("canary_p99_s"), "ms"),
            f"ratio {_fmt(cmp.get('p99_ratio'))} <= {plan.get('max_p99_ratio', '?')}",
            verdict("p99_ratio"),
        )
        table.add_row(
            "agreement",
            "",
            _fmt(cmp.get("agreement"), "rate"),
            f">= {_fmt(plan.get('min_agreement'), 'rate')}",
            verdict("agreement") if "agreement" in thresholds else cmp.get("agreement_note", "-"),
        )
        console.print(table)

    if rollout is not None and rollout.get("history"):
        hist = Table(title="History", show_edge=False)
        for col in ("at (UTC)", "step", "action", "weights", "reason"):
            hist.add_column(col)
        for dec in rollout["history"][-20:]:
            hist.add_row(
                str(dec["at"])[:19].replace("T", " "),
                str(dec["step"] + 1),
                dec["action"],
                " ".join(f"{v}={w}" for v, w in (dec.get("weights") or {}).items()),
                dec["reason"],
            )
        console.print(hist)
    for warning in status.get("warnings") or []:
        console.print(f"[yellow]warning:[/] {warning}")


# ---------------------------------------------------------------------- commands

UrlOpt = typer.Option(DEFAULT_URL, "--url", envvar="RAYFRONT_URL", help="Server base URL.")
TokenOpt = typer.Option(
    None, "--admin-token", envvar="RAYFRONT_ADMIN_TOKEN", help="Admin token of the server."
)
JsonOpt = typer.Option(False, "--json", help="Print the status document as JSON.")


def _bad(exc: ValueError, hint: str) -> typer.BadParameter:
    return typer.BadParameter(str(exc), param_hint=hint)


def _run(
    url: str, method: str, path: str, body: dict[str, Any] | None, token: str | None
) -> dict[str, Any]:
    try:
        return call_admin(url, method, path, body, token=token)
    except AdminError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _show(status: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(status, indent=2, sort_keys=True))
        return
    from rich.console import Console

    render_status(status, Console())


@app.command("start")
def start_command(
    model: str = typer.Argument(..., help="Model name."),
    version: str = typer.Option(..., "--version", help="Canary version to roll out."),
    stable: str | None = typer.Option(None, "--stable", help="Stable version (default: heaviest)."),
    steps: str = typer.Option("5,25,50,100", "--steps", help="Canary weight per step."),
    interval: str = typer.Option("30s", "--interval", help="Time per step, e.g. 30s, 2m."),
    max_error_rate: str = typer.Option("1%", "--max-error-rate", help="e.g. 1% or 0.01."),
    max_p99_ratio: float = typer.Option(1.2, "--max-p99-ratio", help="Canary/stable p99 limit."),
    min_agreement: str = typer.Option(
        "0.98",
        "--min-agreement",
        help="Shadow agreement the canary needs, e.g. 0.98 or 98%; 0 turns the gate off.",
    ),
    min_shadow_samples: int = typer.Option(
        20, "--min-shadow-samples", min=1, help="Mirrored rows a step needs to judge agreement."
    ),
    agreement_atol: float = typer.Option(
        1e-4, "--agreement-atol", min=0.0, help="Absolute tolerance for regression outputs."
    ),
    agreement_rtol: float = typer.Option(
        1e-3, "--agreement-rtol", min=0.0, help="Relative tolerance for regression outputs."
    ),
    min_requests: int = typer.Option(
        100, "--min-requests", min=1, help="Requests per step to judge (the tests' power floor)."
    ),
    alpha: float = typer.Option(
        0.05,
        "--alpha",
        min=0.0001,
        max=0.4999,
        help="Significance level: errors and latency fail a step only when a one-sided test "
        "(two-proportion z, Mann-Whitney U) finds the canary worse at this level.",
    ),
    data_patience: float = typer.Option(
        4.0,
        "--data-patience",
        min=0.0,
        help="Intervals a step short of data keeps collecting before it pauses.",
    ),
    latency_floor_ms: float = typer.Option(
        5.0,
        "--latency-floor-ms",
        min=0.0,
        help="The canary's median must also be this much slower than the stable's to fail "
        "the latency gate.",
    ),
    shadow_percent: str | None = typer.Option(
        None, "--shadow-percent", help="Mirror this % of stable traffic to the canary."
    ),
    output_kind: str = typer.Option("auto", "--output-kind", help="classifier|regression|auto."),
    grace: str = typer.Option(
        "30s", "--grace-period", help="Old version's replicas stay this long."
    ),
    rehearse: bool = typer.Option(
        False,
        "--rehearse",
        help="Replay recorded requests (--payload-log) against the pinned candidate first; "
        "a failed rehearsal starts nothing.",
    ),
    payload_log: Path | None = typer.Option(
        None, "--payload-log", help="With --rehearse: the server's payload log directory."
    ),
    rehearse_requests: int = typer.Option(
        200, "--rehearse-requests", min=1, help="With --rehearse: newest records replayed."
    ),
    rehearse_speed: float = typer.Option(
        1.0, "--rehearse-speed", min=0.01, help="With --rehearse: pace x the recorded rate."
    ),
    webhook: list[str] = typer.Option(
        [],
        "--webhook",
        help="TYPE=URL, repeatable; TYPE is pre-rollout, confirm-rollout, confirm-promotion, "
        "rollback or post-rollout. A failing or slow hook pauses, never promotes.",
    ),
    as_json: bool = JsonOpt,
    url: str = UrlOpt,
    token: str | None = TokenOpt,
) -> None:
    """Start a progressive rollout of MODEL's --version."""
    try:
        plan: dict[str, Any] = {
            "canary_version": version.removeprefix("v"),
            "steps": parse_steps(steps),
        }
    except ValueError as exc:
        raise _bad(exc, "--steps") from None
    for key, raw, parser, hint in (
        ("interval_s", interval, parse_duration, "--interval"),
        ("grace_period_s", grace, _parse_grace, "--grace-period"),
        ("max_error_rate", max_error_rate, parse_rate, "--max-error-rate"),
        ("min_agreement", min_agreement, parse_rate, "--min-agreement"),
    ):
        try:
            plan[key] = parser(raw, what=hint)
        except ValueError as exc:
            raise _bad(exc, hint) from None
    if shadow_percent is not None:
        try:
            plan["shadow_percent"] = parse_percent(shadow_percent, what="--shadow-percent")
        except ValueError as exc:
            raise _bad(exc, "--shadow-percent") from None
    if output_kind not in ("classifier", "regression", "auto"):
        raise typer.BadParameter(
            f"expected classifier, regression or auto, got {output_kind!r}",
            param_hint="--output-kind",
        )
    if max_p99_ratio <= 0:
        raise typer.BadParameter(f"must be > 0, got {max_p99_ratio}", param_hint="--max-p99-ratio")
    plan.update(
        max_p99_ratio=max_p99_ratio,
        min_requests=min_requests,
        alpha=alpha,
        latency_floor_ms=latency_floor_ms,
        data_patience_intervals=data_patience,
        output_kind=output_kind,
        min_shadow_samples=min_shadow_samples,
        agreement_atol=agreement_atol,
        agreement_rtol=agreement_rtol,
    )
    hooks = []
    for i, spec in enumerate(webhook):
        kind, sep, target = spec.partition("=")
        if not sep or not target:
            raise typer.BadParameter(f"expected TYPE=URL, got {spec!r}", param_hint="--webhook")
        hooks.append({"name": f"{kind}-{i + 1}", "type": kind, "url": target})
    if hooks:
        plan["webhooks"] = hooks
    if stable is not None:
        plan["stable_version"] = stable.removeprefix("v")
    if rehearse:
        if payload_log is None:
            raise typer.BadParameter("--rehearse needs --payload-log", param_hint="--payload-log")
        try:
            doc = run_rehearsal(
                model, plan["canary_version"], stable=stable, payload_log=payload_log,
                speed=rehearse_speed, max_requests=rehearse_requests,
                min_agreement=plan["min_agreement"] or 0.98,
                alpha=alpha, latency_floor_ms=latency_floor_ms, url=url, token=token,
            )  # fmt: skip
        except RayfrontError as exc:
            typer.echo(f"error: {exc.message}", err=True)
            raise typer.Exit(1) from None
        if doc["verdict"] != "pass":
            typer.echo(
                f"error: rehearsal of v{doc['canary_version']} failed; no rollout started: "
                + "; ".join(doc["reasons"]),
                err=True,
            )
            raise typer.Exit(1)
    status = _run(url, "POST", model_path(model, "/start"), plan, token)
    _show(status, as_json)


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.2f} ms"


def run_rehearsal(
    model: str,
    version: str,
    *,
    stable: str | None,
    payload_log: Path,
    speed: float,
    max_requests: int,
    min_agreement: float,
    alpha: float,
    latency_floor_ms: float,
    url: str,
    token: str | None,
) -> dict[str, Any]:
    """Replay recorded traffic against the pinned candidate, persist and return the result."""
    from rayfront.canary.rehearsal import http_sender, load_recorded, replay, score

    status = _run(url, "GET", model_path(model), None, token)
    stable = (stable or _heaviest(status)).removeprefix("v")
    recorded = load_recorded(payload_log, model, stable, max_requests)
    host = url.split("://", 1)[-1].rstrip("/")
    typer.echo(
        f"rehearsing v{version} of {model} on {len(recorded)} recorded requests of v{stable} "
        f"at {speed:g}x their pace...",
        err=True,
    )
    canary_out, stable_out = replay(
        recorded, http_sender(host, model), canary=version, stable=stable, speed=speed
    )
    result = score(
        recorded,
        canary_out,
        stable_out,
        canary_version=version,
        stable_version=stable,
        speed=speed,
        min_agreement=min_agreement,
        alpha=alpha,
        latency_floor_ms=latency_floor_ms,
    )
    doc = result.model_dump(mode="json")
    _run(url, "POST", model_path(model, "/rehearsal"), doc, token)
    return doc


def _heaviest(status: dict[str, Any]) -> str:
    weights = (status.get("policy") or {}).get("weights") or {}
    if not weights:
        raise RayfrontError(f"model {status.get('model')!r} has no weights; pass --stable")
    return max(weights, key=lambda v: (weights[v], int(v) if v.isdigit() else -1))


@app.command("rehearse")
def rehearse_command(
    model: str = typer.Argument(..., help="Model name."),
    version: str = typer.Option(
        ..., "--version", help="Candidate version (pinned, no live traffic)."
    ),
    payload_log: Path = typer.Option(
        ..., "--payload-log", help="The server's --payload-log directory (recorded requests)."
    ),
    stable: str | None = typer.Option(None, "--stable", help="Stable version (default: heaviest)."),
    speed: float = typer.Option(1.0, "--speed", min=0.01, help="Replay pace x the recorded rate."),
    max_requests: int = typer.Option(200, "--max-requests", min=1, help="Newest records replayed."),
    min_agreement: str = typer.Option("0.98", "--min-agreement", help="Agreement needed."),
    alpha: float = typer.Option(
        0.05, "--alpha", min=0.0001, max=0.4999, help="Latency test level."
    ),
    latency_floor_ms: float = typer.Option(
        5.0, "--latency-floor-ms", min=0.0, help="Median floor."
    ),
    as_json: bool = JsonOpt,
    url: str = UrlOpt,
    token: str | None = TokenOpt,
) -> None:
    """Replay recorded real requests against the pinned --version and the stable; judge it.

    Agreement with the recorded answers, errors, and latency against the stable on the same
    requests at the same moments. The result is kept with the model (canary status shows it);
    exit status 1 when it fails.
    """
    try:
        agreement = parse_rate(min_agreement, what="--min-agreement")
    except ValueError as exc:
        raise _bad(exc, "--min-agreement") from None
    try:
        doc = run_rehearsal(
            model, version.removeprefix("v"), stable=stable, payload_log=payload_log,
            speed=speed, max_requests=max_requests, min_agreement=agreement, alpha=alpha,
            latency_floor_ms=latency_floor_ms, url=url, token=token,
        )  # fmt: skip
    except RayfrontError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
    else:
        typer.echo(
            f"rehearsal of v{doc['canary_version']}: {doc['verdict']} "
            f"({doc['requests']} requests, agreement "
            f"{'n/a' if doc['agreement'] is None else format(doc['agreement'], '.2%')}, "
            f"errors {doc['errors']}, p50 {_ms(doc['canary_p50_s'])} vs stable "
            f"{_ms(doc['stable_p50_s'])})"
        )
        for reason in doc["reasons"]:
            typer.echo(f"  - {reason}")
    if doc["verdict"] != "pass":
        raise typer.Exit(1)


@app.command("status")
def status_command(
    model: str = typer.Argument(..., help="Model name."),
    as_json: bool = JsonOpt,
    url: str = UrlOpt,
    token: str | None = TokenOpt,
) -> None:
    """Show MODEL's weights, rollout step, latest analysis and decision history."""
    _show(_run(url, "GET", model_path(model), None, token), as_json)


def _action(name: str, doc: str) -> None:
    def command(
        model: str = typer.Argument(..., help="Model name."),
        reason: str | None = typer.Option(None, "--reason", help="Recorded in the history."),
        as_json: bool = JsonOpt,
        url: str = UrlOpt,
        token: str | None = TokenOpt,
    ) -> None:
        body = {"reason": reason} if reason and name != "resume" else None
        _show(_run(url, "POST", model_path(model, f"/{name}"), body, token), as_json)

    command.__doc__ = doc
    app.command(name)(command)


_action("pause", "Freeze MODEL's rollout at its current weights.")
_action("resume", "Continue MODEL's paused rollout (the step's interval restarts).")
_action("promote", "Give the canary 100% now and make it the stable.")
_action("abort", "Stop MODEL's rollout and send all traffic back to the stable.")


@app.command("set-weights")
def set_weights_command(
    model: str = typer.Argument(..., help="Model name."),
    weights: list[str] = typer.Argument(..., help="VERSION=PERCENT pairs, e.g. 1=90 2=10."),
    as_json: bool = JsonOpt,
    url: str = UrlOpt,
    token: str | None = TokenOpt,
) -> None:
    """Set MODEL's traffic split (integers summing to 100)."""
    try:
        parsed = parse_weights(weights)
    except ValueError as exc:
        raise _bad(exc, "WEIGHTS") from None
    _show(_run(url, "POST", model_path(model, "/weights"), {"weights": parsed}, token), as_json)


@app.command("shadow")
def shadow_command(
    model: str = typer.Argument(..., help="Model name."),
    percent: str = typer.Option(..., "--percent", help="Percent of requests to mirror; 0 = off."),
    target: str | None = typer.Option(None, "--target", help="Version to mirror to."),
    as_json: bool = JsonOpt,
    url: str = UrlOpt,
    token: str | None = TokenOpt,
) -> None:
    """Mirror a share of MODEL's requests to a version and compare its answers."""
    try:
        value = parse_percent(percent, what="--percent")
    except ValueError as exc:
        raise _bad(exc, "--percent") from None
    body = {"percent": value, "target": None if target is None else target.removeprefix("v")}
    _show(_run(url, "POST", model_path(model, "/shadow"), body, token), as_json)
