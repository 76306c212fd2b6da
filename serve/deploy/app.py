"""Ray Serve applications: builders for ``serve run``/``serve deploy`` and the Serve config YAML.

rayfront is a set of Serve applications: ``rayfront`` (the Gateway) and one
``rayfront--<model>--v<version>`` per live model version. ``rayfront serve`` deploys them
itself; ``rayfront serve --print-config`` writes the equivalent Serve config YAML so the
same deployment runs with stock ``serve deploy`` on a multi-node cluster (KubeRay
RayService included).
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve.deployment import Application

from rayfront.deploy.gateway import Gateway
from rayfront.deploy.version_app import (
    DEPLOYMENT_NAME,
    RAY_ENV_VARS,
    SERVE_LOGGING,
    version_application,
    version_options,
)
from rayfront.repository.layout import Repository
from rayfront.settings import ServerSettings

GATEWAY_DEPLOYMENT = "Gateway"


def gateway_application(settings: ServerSettings) -> Application:
    """The Serve application for the Gateway (ingress)."""
    deployment = serve.deployment(Gateway).options(
        name=GATEWAY_DEPLOYMENT,
        num_replicas=settings.gateway_replicas,
        ray_actor_options={
            "num_cpus": settings.gateway_num_cpus,
            **({"resources": settings.gateway_resources} if settings.gateway_resources else {}),
        },
        # The gateway is called by Serve only for health checks and admin; traffic
        # arrives on its own sockets, so Serve's request cap does not apply to it.
        max_ongoing_requests=100,
        graceful_shutdown_timeout_s=40.0,
        logging_config=SERVE_LOGGING,
    )
    return deployment.bind(settings.model_dump(mode="json"))


# --- builders for the Serve config YAML (import_path targets) ---------------------------


def build_gateway(args: dict[str, Any]) -> Application:
    """``import_path: rayfront.deploy.app:build_gateway``; args are ServerSettings fields."""
    return gateway_application(ServerSettings.model_validate(args))


def build_version(args: dict[str, Any]) -> Application:
    """``import_path: rayfront.deploy.app:build_version``; args: settings + model + version."""
    args = dict(args)
    model = args.pop("model")
    version = args.pop("version")
    settings = ServerSettings.model_validate(args)
    spec = Repository(settings.repository).spec(model)
    return version_application(settings, spec, version)


def serve_config(settings: ServerSettings) -> dict[str, Any]:
    """The Serve config (as a dict) that deploys exactly what ``rayfront serve`` would."""
    repo = Repository(settings.repository)
    runtime_env = {"env_vars": dict(RAY_ENV_VARS)}
    settings_args = settings.model_dump(mode="json")
    apps: list[dict[str, Any]] = []
    for model in repo.models():
        spec = repo.spec(model)
        for v in repo.served_versions(model):
            opts = version_options(settings, spec)
            apps.append(
                {
                    "name": settings.version_app_name(model, v),
                    "route_prefix": None,
                    "import_path": "rayfront.deploy.app:build_version",
                    "runtime_env": runtime_env,
                    "args": {**settings_args, "model": model, "version": v},
                    "deployments": [
                        {
                            "name": DEPLOYMENT_NAME,
                            "autoscaling_config": opts["autoscaling_config"],
                            "ray_actor_options": opts["ray_actor_options"],
                            "max_ongoing_requests": opts["max_ongoing_requests"],
                        }
                    ],
                }
            )
    apps.append(
        {
            "name": settings.gateway_app_name,
            "route_prefix": None,
            "import_path": "rayfront.deploy.app:build_gateway",
            "runtime_env": runtime_env,
            "args": settings_args,
            "deployments": [
                {"name": GATEWAY_DEPLOYMENT, "num_replicas": settings.gateway_replicas}
            ],
        }
    )
    return {
        # rayfront's gateway owns the HTTP/gRPC ports; Serve's own proxy is not used.
        "proxy_location": "Disabled",
        "logging_config": {"enable_access_log": False},
        "applications": apps,
    }
