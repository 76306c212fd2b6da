"""The canary admin REST API: routes the ingress's production HTTP app serves.

Every body and answer is JSON. Errors are ``{"error": "..."}`` with the status from
:func:`rayfront.errors.status_for`, as on every other route of the app. Changing routes
are ``admin`` routes, so the app's admin check (:mod:`rayfront.auth`) runs before them;
reading ones are open. Every successful call answers with the model's status document
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
POST        /v2/rayfront/canary/{model}/rehearsal       a RehearsalResult (kept, newest ten)
==========  ==========================================  ========================================

``start`` answers 409 when the model already has an active rollout, 404 for an unknown
model or version, 400 for a bad plan or a canary whose signature differs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from rayfront.canary.controller import CanaryManager
from rayfront.canary.state import RehearsalResult, RolloutPlan, describe_validation_error
from rayfront.errors import InvalidArgumentError
from rayfront.protocol.http_app import RequestContext, Response, Route

PREFIX = "/v2/rayfront/canary"

JsonBody = Any
_M = TypeVar("_M", bound=BaseModel)
Action = Callable[[dict[str, str], JsonBody], dict[str, Any]]


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


def _validated(model_cls: type[_M], data: dict[str, Any], what: str) -> _M:
    """``data`` as ``model_cls``, or a 400 naming ``what`` and every field that is wrong."""
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        raise InvalidArgumentError(f"{what}: {describe_validation_error(exc)}") from None


def canary_routes(manager: CanaryManager) -> list[Route]:
    """The canary routes for :func:`rayfront.protocol.http_app.build_http_app`."""

    def route(method: str, suffix: str, action: Action, *, admin: bool) -> Route:
        async def handler(ctx: RequestContext) -> Response:
            body = ctx.json() if ctx.body else None
            # Manager calls write files (fsync): keep them off the event loop.
            return Response.json(await asyncio.to_thread(action, ctx.params, body))

        return Route(method, PREFIX + suffix, handler, admin=admin)

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
        manager.start(model, _validated(RolloutPlan, fields, f"rollout plan of model {model!r}"))
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

    def action(name: str) -> Action:
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

    def rehearsal(params: dict[str, str], body: JsonBody) -> dict[str, Any]:
        model = params["model"]
        what = f"rehearsal of model {model!r}"
        manager.record_rehearsal(model, _validated(RehearsalResult, _obj(body, what), what))
        return manager.status(model)

    routes = [
        route("GET", "", list_models, admin=False),
        route("POST", "/{model}/rehearsal", rehearsal, admin=True),
        route("GET", "/{model}", status, admin=False),
        route("POST", "/{model}/start", start, admin=True),
        route("POST", "/{model}/weights", weights, admin=True),
        route("POST", "/{model}/shadow", shadow, admin=True),
    ]
    for name in ("pause", "resume", "promote", "abort"):
        routes.append(route("POST", f"/{{model}}/{name}", action(name), admin=True))
    return routes
