"""The canary admin REST API as transport-neutral handlers for the gateway's HTTP app.

Every body and answer is JSON. Errors are ``{"error": "..."}`` with the status from
:func:`rayfront.errors.status_for`. Changing routes need the admin token (``check_admin``
is given the request headers and raises :class:`~rayfront.errors.PermissionDeniedError`);
reading ones do not. Every successful call answers with the model's status document
(:meth:`CanaryManager.status`).

==========  ==========================================  ========================================
Method      Path                                        Body
==========  ==========================================  ========================================
GET         /v2/rayfront/canary                         -> ``{"models": [...]}``
GET         /v2/rayfront/canary/{model}                 -> status document
POST        /v2/rayfront/canary/{model}/start           RolloutPlan fields; ``canary_version``
                                                        required, ``stable_version`` defaults to
                                                        the heaviest version, ``interval_s`` and
                                                        ``steps`` required
POST        /v2/rayfront/canary/{model}/weights         ``{"weights": {"1": 90, "2": 10}}``
POST        /v2/rayfront/canary/{model}/shadow          ``{"percent": 10, "target": "2"}``
                                                        (target optional during a rollout)
POST        /v2/rayfront/canary/{model}/pause           ``{"reason": "..."}`` (optional)
POST        /v2/rayfront/canary/{model}/resume          none
POST        /v2/rayfront/canary/{model}/promote         ``{"reason": "..."}`` (optional)
POST        /v2/rayfront/canary/{model}/abort           ``{"reason": "..."}`` (optional)
==========  ==========================================  ========================================

``start`` answers 409 when the model already has an active rollout, 404 for an unknown
model or version, 400 for a bad plan or a canary whose signature differs.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import unquote

from pydantic import ValidationError

from rayfront.canary.controller import CanaryManager
from rayfront.canary.state import RolloutPlan, describe_validation_error
from rayfront.errors import InvalidArgumentError, RayfrontError, client_message, status_for

PREFIX = "/v2/rayfront/canary"

JsonBody = Any
Headers = Mapping[str, str]
Answer = tuple[int, dict[str, Any]]
Handler = Callable[[dict[str, str], JsonBody, Headers | None], Awaitable[Answer]]
Route = tuple[str, re.Pattern[str], Handler]
CheckAdmin = Callable[[Headers], None]

_MODEL = r"(?P<model>[^/]+)"


def _obj(body: JsonBody, what: str) -> dict[str, Any]:
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise InvalidArgumentError(
            f"{what}: the JSON body must be an object, got {type(body).__name__}"
        )
    return body


def _reason(body: JsonBody, what: str, default: str) -> str:
    reason = _obj(body, what).get("reason", default)
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidArgumentError(f"{what}: 'reason' must be a non-empty string, got {reason!r}")
    return reason


def canary_routes(manager: CanaryManager, check_admin: CheckAdmin) -> list[Route]:
    """The admin routes: ``(method, path regex, async handler(path_params, body, headers))``.

    Handlers answer ``(http_status, json_dict)`` and never raise a :class:`RayfrontError`;
    anything else is a server fault for the app's own error handler.
    """

    def guarded(fn: Callable[[dict[str, str], JsonBody], Any], *, admin: bool) -> Handler:
        async def handler(
            params: dict[str, str], body: JsonBody, headers: Headers | None = None
        ) -> Answer:
            try:
                if admin:
                    check_admin(headers or {})
                # Manager calls write files (fsync): keep them off the event loop.
                return 200, await asyncio.to_thread(fn, params, body)
            except RayfrontError as exc:
                return status_for(exc).http, {"error": client_message(exc)}

        return handler

    def list_models(params: dict[str, str], body: JsonBody) -> dict[str, Any]:
        return {"models": manager.models()}

    def status(params: dict[str, str], body: JsonBody) -> dict[str, Any]:
        return manager.status(params["model"])

    def start(params: dict[str, str], body: JsonBody) -> dict[str, Any]:
        model = params["model"]
        fields = dict(_obj(body, f"start rollout of model {model!r}"))
        if "canary_version" not in fields:
            raise InvalidArgumentError(
                f"start rollout of model {model!r}: 'canary_version' is required"
            )
        for key in ("canary_version", "stable_version"):
            if isinstance(fields.get(key), int) and not isinstance(fields.get(key), bool):
                fields[key] = str(fields[key])
        if fields.get("stable_version") is None:
            fields["stable_version"] = manager.default_stable(model)
        try:
            plan = RolloutPlan.model_validate(fields)
        except ValidationError as exc:
            raise InvalidArgumentError(
                f"rollout plan of model {model!r}: {describe_validation_error(exc)}"
            ) from None
        manager.start(model, plan)
        return manager.status(model)

    def weights(params: dict[str, str], body: JsonBody) -> dict[str, Any]:
        model = params["model"]
        data = _obj(body, f"set weights of model {model!r}")
        if "weights" not in data:
            raise InvalidArgumentError(
                f"set weights of model {model!r}: body needs 'weights', e.g. "
                '{"weights": {"1": 90, "2": 10}}'
            )
        manager.set_weights(model, data["weights"])
        return manager.status(model)

    def shadow(params: dict[str, str], body: JsonBody) -> dict[str, Any]:
        model = params["model"]
        data = _obj(body, f"set shadow of model {model!r}")
        percent = data.get("percent")
        if isinstance(percent, bool) or not isinstance(percent, int | float):
            raise InvalidArgumentError(
                f"set shadow of model {model!r}: 'percent' must be a number in 0..100, got {percent!r}"
            )
        target = data.get("target")
        manager.set_shadow(model, float(percent), None if target is None else str(target))
        return manager.status(model)

    def action(name: str) -> Callable[[dict[str, str], JsonBody], dict[str, Any]]:
        def run(params: dict[str, str], body: JsonBody) -> dict[str, Any]:
            model = params["model"]
            what = f"{name} rollout of model {model!r}"
            if name == "resume":
                _obj(body, what)
                manager.resume(model)
            else:
                method = getattr(manager, name)
                method(model, _reason(body, what, f"{name}d by operator"))
            return manager.status(model)

        return run

    routes: list[Route] = [
        ("GET", re.compile(rf"^{PREFIX}/?$"), guarded(list_models, admin=False)),
        ("GET", re.compile(rf"^{PREFIX}/{_MODEL}/?$"), guarded(status, admin=False)),
        ("POST", re.compile(rf"^{PREFIX}/{_MODEL}/start$"), guarded(start, admin=True)),
        ("POST", re.compile(rf"^{PREFIX}/{_MODEL}/weights$"), guarded(weights, admin=True)),
        ("POST", re.compile(rf"^{PREFIX}/{_MODEL}/shadow$"), guarded(shadow, admin=True)),
    ]
    for name in ("pause", "resume", "promote", "abort"):
        routes.append(
            ("POST", re.compile(rf"^{PREFIX}/{_MODEL}/{name}$"), guarded(action(name), admin=True))
        )
    return routes


async def dispatch(
    routes: list[Route], method: str, path: str, body: JsonBody, headers: Headers | None = None
) -> Answer | None:
    """Run the route matching ``method`` and ``path``; None when no canary route matches.

    A path that matches with another method answers 405, so clients see a clear error.
    """
    matched_path = False
    for route_method, pattern, handler in routes:
        m = pattern.match(path)
        if m is None:
            continue
        matched_path = True
        if route_method == method.upper():
            params = {k: unquote(v) for k, v in m.groupdict().items()}
            return await handler(params, body, headers)
    if matched_path:
        return 405, {"error": f"method {method.upper()} not allowed on {path}"}
    return None
